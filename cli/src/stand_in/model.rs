//! The deterministic stand-in model: what answers when no script matches.
//!
//! - tools offered and no tool_result yet: call `echo` with the first user text, else
//!   `web_fetch` with the first URL of the first user message, else answer directly;
//! - otherwise a final text that says plainly it is not Claude, quoting the question and
//!   the latest tool result.

use serde_json::{Value, json};

use super::conversation::{
    first_url, first_user_text, latest_tool_result_text, offered_tools, truncate_chars,
};
use super::{Reply, Turn};

/// Marks every final answer, so nobody mistakes the stand-in for the real model.
pub(super) const BANNER: &str = "[agentq stand-in model, not Claude]";

pub(super) fn respond(request: &Value) -> Reply {
    choose(request).reply(request)
}

fn choose(request: &Value) -> Turn {
    let question = first_user_text(request).unwrap_or_default();
    let tool_result = latest_tool_result_text(request);
    if tool_result.is_none() {
        let tools = offered_tools(request);
        if tools.contains(&"echo") {
            return call("echo", json!({ "text": question }));
        }
        if tools.contains(&"web_fetch")
            && let Some(url) = first_url(&question)
        {
            return call("web_fetch", json!({ "url": url }));
        }
    }
    let mut text = format!("{BANNER} You asked: {}.", truncate_chars(&question, 200));
    if let Some(result) = tool_result {
        text.push_str(" The tool returned: ");
        text.push_str(truncate_chars(&result, 300));
    }
    Turn::answer(text)
}

fn call(tool: &str, input: Value) -> Turn {
    Turn::tool(tool, input).with_text(format!("[stand-in] I will call {tool} to answer this."))
}
