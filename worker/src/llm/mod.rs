//! The LLM side of a step: a provider-neutral request/response and the `LlmClient` trait.
//! Messages follow the Anthropic Messages API shape (content blocks, `tool_use`/`tool_result`),
//! which is the native protocol agentq speaks.

pub mod anthropic;
pub mod openai;

use agentq_shared::schemas::Usage;

#[derive(Debug, Clone, PartialEq)]
pub struct LlmRequest {
    pub model: String,
    pub system: Option<String>,
    /// `{"role", "content"}` messages, content a string or a list of blocks.
    pub messages: Vec<serde_json::Value>,
    /// Tool definitions in the Anthropic `tools` format.
    pub tools: Vec<serde_json::Value>,
    pub max_tokens: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LlmResponse {
    /// Content blocks as the provider returned them.
    pub content: Vec<serde_json::Value>,
    pub stop_reason: Option<String>,
    pub usage: Usage,
    pub http_status: u16,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum LlmError {
    /// The provider answered with an error status.
    #[error("LLM provider answered {status}: {message}")]
    Status {
        status: u16,
        message: String,
        /// The provider's `retry-after`, when it sent one.
        retry_after: Option<std::time::Duration>,
    },
    /// No usable answer: connection refused or reset, or a body we could not read.
    #[error("LLM call failed: {0}")]
    Transport(String),
    /// No answer within `AGENTQ_LLM_TIMEOUT_SECS`.
    #[error("LLM call timed out after {0:?}")]
    Timeout(std::time::Duration),
}

impl LlmError {
    /// Worth another attempt: rate limits, overloads, server errors and transport failures.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Status { status, .. } => {
                matches!(status, 408 | 409 | 429 | 500 | 502 | 503 | 504 | 529)
            }
            Self::Transport(_) | Self::Timeout(_) => true,
        }
    }

    pub fn http_status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            Self::Transport(_) | Self::Timeout(_) => None,
        }
    }
}

#[async_trait::async_trait]
pub trait LlmClient: Send + Sync {
    async fn complete(&self, request: &LlmRequest) -> Result<LlmResponse, LlmError>;
}
