//! `echo` and `echo_approved`, test-only tools (`AGENTQ_TEST_TOOLS=true`): return their text after
//! an optional delay, which lets tests hold a step in its tool call. `echo_approved` needs a
//! human's approval and counts as a side effect.

use std::time::Duration;

use agentq_shared::config::ToolSettings;
use agentq_shared::tools::{Tool, ToolContext, ToolDefinition, ToolError, builtin_definitions};
use serde_json::{Value, json};

pub struct Echo {
    pub name: &'static str,
}

#[async_trait::async_trait]
impl Tool for Echo {
    fn definition(&self) -> ToolDefinition {
        let settings = ToolSettings {
            test_tools: true,
            ..Default::default()
        };
        builtin_definitions(&settings)
            .into_iter()
            .find(|d| d.name == self.name)
            .unwrap_or_else(|| unreachable!("test tools are in the catalog when turned on"))
    }

    /// `echo_approved` tells its approver how long the text is (a test of the approval hook).
    fn approval_details(&self, args: &Value) -> Option<Value> {
        let text = args.get("text").and_then(Value::as_str)?;
        (self.definition().requires_approval).then(|| json!({"characters": text.chars().count()}))
    }

    async fn call(&self, args: Value, _ctx: &ToolContext) -> Result<Value, ToolError> {
        if let Some(delay) = args.get("delay_ms").and_then(Value::as_u64) {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let text = args.get("text").and_then(Value::as_str).unwrap_or_default();
        Ok(json!({ "text": text }))
    }
}
