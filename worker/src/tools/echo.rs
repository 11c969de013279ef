//! `echo`, a test-only tool (`AGENTQ_TEST_TOOLS=true`): returns its text after an optional delay,
//! which lets tests hold a step in its tool call.

use std::time::Duration;

use agentq_shared::config::ToolSettings;
use agentq_shared::tools::{
    ECHO, Tool, ToolContext, ToolDefinition, ToolError, builtin_definitions,
};
use serde_json::{Value, json};

pub struct Echo;

#[async_trait::async_trait]
impl Tool for Echo {
    fn definition(&self) -> ToolDefinition {
        builtin_definitions(&ToolSettings {
            test_tools: true,
            ..Default::default()
        })
        .into_iter()
        .find(|d| d.name == ECHO)
        .unwrap_or_else(|| unreachable!("echo is in the catalog when test tools are on"))
    }

    async fn call(&self, args: Value, _ctx: &ToolContext) -> Result<Value, ToolError> {
        if let Some(delay) = args.get("delay_ms").and_then(Value::as_u64) {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let text = args.get("text").and_then(Value::as_str).unwrap_or_default();
        Ok(json!({ "text": text }))
    }
}
