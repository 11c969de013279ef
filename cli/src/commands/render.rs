//! Human-readable output of sessions, steps and tools.

use agentq_shared::schemas::{AgentSession, AgentStep, PendingApproval};
use serde_json::Value;

const CLIP: usize = 400;

fn clip(text: &str) -> String {
    if text.chars().count() <= CLIP {
        text.to_owned()
    } else {
        format!("{}…", text.chars().take(CLIP).collect::<String>())
    }
}

pub fn step(step: &AgentStep) {
    println!("step {}", step.index);
    if let Some(thought) = &step.thought {
        println!("  thought:      {}", clip(thought));
    }
    if let Some(action) = &step.action {
        println!(
            "  action:       {} {}",
            action.tool,
            clip(&action.args.to_string())
        );
    }
    if let Some(observation) = &step.observation {
        let shown = match (&observation["error"], &observation["result"]) {
            (Value::String(error), _) => format!("error: {error}"),
            (_, result) => result.to_string(),
        };
        println!("  observation:  {}", clip(&shown));
    }
    if let Some(answer) = &step.final_answer {
        println!("  final answer: {answer}");
    }
}

pub fn outcome(session: &AgentSession) {
    let totals = &session.totals;
    let cost = totals.cost_usd.map_or_else(
        || "unknown (model without a price)".to_owned(),
        |c| format!("${c}"),
    );
    println!(
        "session {} {}: {} steps, {} LLM calls, {} input / {} output tokens, cost {cost}",
        session.session_id,
        session.status,
        totals.steps,
        totals.llm_calls,
        totals.input_tokens,
        totals.output_tokens
    );
    if let Some(error) = &session.error {
        println!("error {}: {}", error.code, error.message);
    }
}

pub fn session(session: &AgentSession) {
    for s in &session.steps {
        step(s);
    }
    if let Some(pending) = &session.pending_approval {
        pending_approval(pending);
    }
    outcome(session);
}

/// Every call the decision covers, unclipped: the approver must see all that will run.
pub fn pending_approval(pending: &PendingApproval) {
    println!(
        "step {} awaits approval until {} ({} tool call{}; one decision covers all):",
        pending.step,
        pending.expires_at.to_rfc3339(),
        pending.calls.len(),
        if pending.calls.len() == 1 { "" } else { "s" }
    );
    for call in &pending.calls {
        let why = if call.requires_approval {
            "needs approval"
        } else {
            "runs once the turn is approved"
        };
        println!("  [{}] {} ({why})", call.call, call.tool);
        println!("      args:    {}", call.args);
        if let Some(details) = &call.details {
            println!("      details: {details}");
        }
    }
    println!(
        "decide with: agentq approve SESSION_ID --step {} [--reject] [--reason TEXT]",
        pending.step
    );
}

pub fn tools(body: &Value) {
    for tool in body["tools"].as_array().into_iter().flatten() {
        let approval = if tool["requires_approval"] == Value::Bool(true) {
            " (requires approval)"
        } else {
            ""
        };
        println!(
            "{:<12} {}{approval}",
            tool["name"].as_str().unwrap_or_default(),
            tool["description"].as_str().unwrap_or_default()
        );
    }
}
