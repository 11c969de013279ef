//! The tool base: definitions (what the model and the API see), results (what the agent
//! observes), the `Tool` trait and the registry that validates arguments before a tool runs.
//! Implementations live in the worker; the catalog of definitions lives here so the API can list
//! tools and validate requests without linking any tool.

mod catalog;
pub mod code_run;
mod registry;
pub mod sql_query;

pub use catalog::{ECHO, ECHO_APPROVED, WEB_FETCH, builtin_definitions, web_fetch_definition};
pub use registry::ToolRegistry;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ToolCategory {
    Web,
    Code,
    Data,
    Test,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ToolDefinition {
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments.
    pub parameters: serde_json::Value,
    pub category: ToolCategory,
    pub requires_approval: bool,
    /// Safe to run again after a crash left its outcome unknown.
    pub idempotent: bool,
}

impl ToolDefinition {
    /// The definition in the Anthropic Messages API `tools` format.
    pub fn to_anthropic(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "description": self.description,
            "input_schema": self.parameters,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolResult {
    pub tool_name: String,
    pub success: bool,
    pub result: Option<serde_json::Value>,
    pub error: Option<String>,
    pub execution_time_ms: u64,
}

impl ToolResult {
    pub fn failure(tool_name: &str, error: impl Into<String>, execution_time_ms: u64) -> Self {
        Self {
            tool_name: tool_name.to_owned(),
            success: false,
            result: None,
            error: Some(error.into()),
            execution_time_ms,
        }
    }
}

/// Where a tool call comes from, for logs and keyed side effects.
#[derive(Debug, Clone)]
pub struct ToolContext {
    pub session_id: Uuid,
    pub step: u32,
}

/// A failure the agent sees as its observation; never a crashed worker.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ToolError(pub String);

#[async_trait::async_trait]
pub trait Tool: Send + Sync {
    fn definition(&self) -> ToolDefinition;
    /// Runs with arguments already validated against `definition().parameters`.
    async fn call(
        &self,
        args: serde_json::Value,
        ctx: &ToolContext,
    ) -> Result<serde_json::Value, ToolError>;

    /// Whether this call may run again after a crash left its outcome unknown. Defaults to the
    /// tool's `idempotent`; a tool like web_fetch decides per call (GET yes, POST no).
    fn is_idempotent(&self, _args: &serde_json::Value) -> bool {
        self.definition().idempotent
    }

    /// For tools that require approval: what the approver should see besides the arguments
    /// (shown in the session's `pending_approval.details`).
    fn approval_details(&self, _args: &serde_json::Value) -> Option<serde_json::Value> {
        None
    }

    /// Waits for work the tool left running in the background (a sandbox's clean-up); a
    /// short-lived process calls this before it exits.
    async fn settle(&self) {}
}
