//! `agentq tool run NAME --args JSON`: one tool call with the worker's tool configuration
//! (AGENTQ_WEB_FETCH_*, AGENTQ_SANDBOX, ...), printed as the `ToolResult` the agent would observe.

use agentq_shared::config::{Env, ToolSettings};
use agentq_shared::tools::ToolContext;
use anyhow::Context;

use crate::args::ToolCommand;

pub async fn run(command: ToolCommand) -> anyhow::Result<i32> {
    let ToolCommand::Run { name, args } = command;
    let args: serde_json::Value = serde_json::from_str(&args)
        .context("--args must be a JSON object, e.g. '{\"url\": \"https://example.com\"}'")?;
    anyhow::ensure!(args.is_object(), "--args must be a JSON object");
    let mut settings = ToolSettings::from_env(&Env::process())?;
    // One run: pre-creating containers for later runs would only leave work to clean up.
    settings.code_run.pool_size = 0;
    let registry = agentq_worker::tools::registry(&settings)?;
    let ctx = ToolContext {
        session_id: uuid::Uuid::nil(),
        step: 0,
    };
    let result = registry.run(&name, args, &ctx).await;
    // The sandbox removes its container after answering: wait, so none is left behind.
    registry.settle().await;
    println!("{}", serde_json::to_string_pretty(&result)?);
    Ok(if result.success { 0 } else { 1 })
}
