//! The Anthropic Messages API over reqwest: `POST {ANTHROPIC_BASE_URL}/v1/messages` with
//! `x-api-key` and `anthropic-version: 2023-06-01`, native tool use.

use std::time::Duration;

use agentq_shared::config::LlmConfig;
use agentq_shared::schemas::Usage;
use serde::Deserialize;
use serde_json::json;

use super::{LlmClient, LlmError, LlmRequest, LlmResponse};

pub const API_VERSION: &str = "2023-06-01";

pub struct AnthropicClient {
    http: reqwest::Client,
    timeout: Duration,
    endpoint: String,
    api_key: String,
}

#[derive(Deserialize)]
struct MessagesResponse {
    content: Vec<serde_json::Value>,
    stop_reason: Option<String>,
    usage: ApiUsage,
}

#[derive(Deserialize)]
struct ApiUsage {
    input_tokens: u64,
    output_tokens: u64,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    /// Breakdown of cache writes by TTL, when the provider sends it.
    #[serde(default)]
    cache_creation: Option<CacheCreation>,
}

#[derive(Deserialize)]
struct CacheCreation {
    #[serde(default)]
    ephemeral_1h_input_tokens: u64,
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ErrorBody,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(rename = "type")]
    kind: String,
    message: String,
}

impl AnthropicClient {
    pub fn new(config: &LlmConfig) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("agentq/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            timeout: config.timeout,
            endpoint: format!("{}/v1/messages", config.base_url),
            api_key: config.api_key.clone(),
        })
    }

    fn body(request: &LlmRequest) -> serde_json::Value {
        let mut body = json!({
            "model": request.model,
            "max_tokens": request.max_tokens,
            "messages": request.messages,
        });
        // Cache breakpoints on the system prompt and the last tool: every step of a session
        // sends the same prefix, so later steps read it from the cache.
        if let Some(system) = &request.system {
            body["system"] = json!([
                {"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}
            ]);
        }
        if !request.tools.is_empty() {
            let mut tools = request.tools.clone();
            if let Some(last) = tools.last_mut().and_then(|t| t.as_object_mut()) {
                last.insert("cache_control".into(), json!({"type": "ephemeral"}));
            }
            body["tools"] = json!(tools);
        }
        body
    }
}

#[async_trait::async_trait]
impl LlmClient for AnthropicClient {
    async fn complete(&self, request: &LlmRequest) -> Result<LlmResponse, LlmError> {
        let response = self
            .http
            .post(&self.endpoint)
            .header("x-api-key", &self.api_key)
            .header("anthropic-version", API_VERSION)
            .json(&Self::body(request))
            .send()
            .await
            .map_err(|e| self.transport_error(e))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|secs| secs.is_finite() && *secs >= 0.0)
            .map(Duration::from_secs_f64);
        let bytes = response
            .bytes()
            .await
            .map_err(|e| self.transport_error(e))?;
        if status != 200 {
            let message = match serde_json::from_slice::<ErrorEnvelope>(&bytes) {
                Ok(envelope) => format!("{}: {}", envelope.error.kind, envelope.error.message),
                Err(_) => String::from_utf8_lossy(&bytes).chars().take(500).collect(),
            };
            return Err(LlmError::Status {
                status,
                message,
                retry_after,
            });
        }
        let parsed: MessagesResponse = serde_json::from_slice(&bytes)
            .map_err(|e| LlmError::Transport(format!("unreadable Messages API response: {e}")))?;
        Ok(LlmResponse {
            content: parsed.content,
            stop_reason: parsed.stop_reason,
            usage: Usage {
                input_tokens: parsed.usage.input_tokens,
                output_tokens: parsed.usage.output_tokens,
                cache_read_tokens: parsed.usage.cache_read_input_tokens.unwrap_or(0),
                cache_write_tokens: parsed.usage.cache_creation_input_tokens.unwrap_or(0),
                cache_write_1h_tokens: parsed
                    .usage
                    .cache_creation
                    .map_or(0, |c| c.ephemeral_1h_input_tokens),
            },
            http_status: status,
        })
    }
}

impl AnthropicClient {
    fn transport_error(&self, e: reqwest::Error) -> LlmError {
        if e.is_timeout() {
            LlmError::Timeout(self.timeout)
        } else {
            LlmError::Transport(without_url(e).to_string())
        }
    }
}

/// reqwest errors carry the URL; the base URL is configuration, not a secret, but keep messages short.
fn without_url(e: reqwest::Error) -> reqwest::Error {
    e.without_url()
}
