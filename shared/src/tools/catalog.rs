//! Definitions of the tools agentq ships. The worker registers an implementation for each; a
//! worker test checks the two agree.

use serde_json::json;

use super::{ToolCategory, ToolDefinition};
use crate::config::ToolSettings;

pub const ECHO: &str = "echo";
pub const ECHO_APPROVED: &str = "echo_approved";

/// The tools this deployment offers, in a stable order.
pub fn builtin_definitions(settings: &ToolSettings) -> Vec<ToolDefinition> {
    let mut tools = Vec::new();
    if settings.test_tools {
        tools.push(echo());
        tools.push(echo_approved());
    }
    tools
}

/// A test-only tool (`AGENTQ_TEST_TOOLS=true`): returns its text, optionally after a delay.
fn echo() -> ToolDefinition {
    ToolDefinition {
        name: ECHO.into(),
        description: "Test tool: returns the given text unchanged, after an optional delay.".into(),
        parameters: json!({
            "type": "object",
            "properties": {
                "text": {"type": "string", "maxLength": 100000, "description": "Text to return."},
                "delay_ms": {"type": "integer", "minimum": 0, "maximum": 60000,
                             "description": "Milliseconds to wait before answering."}
            },
            "required": ["text"],
            "additionalProperties": false
        }),
        category: ToolCategory::Test,
        requires_approval: false,
        idempotent: true,
    }
}

/// A test-only tool like `echo` that needs a human's approval and counts as a side effect.
fn echo_approved() -> ToolDefinition {
    ToolDefinition {
        name: ECHO_APPROVED.into(),
        description: "Test tool: like echo, but every call needs a human's approval.".into(),
        requires_approval: true,
        idempotent: false,
        ..echo()
    }
}
