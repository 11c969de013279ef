//! Act (step protocol, 6): run the turn's tool calls in order, each once, storing each result;
//! or hold the whole turn for a human first when any call needs approval. The last result is
//! stored with the advance to the next step.
//!
//! A call whose start was recorded but whose result was not had its outcome lost to a crash: an
//! idempotent call runs again; one with side effects gets "interrupted, outcome unknown"
//! instead. Only such calls need the start mark (one round trip); an idempotent one runs
//! again either way.

use agentq_shared::schemas::CallReview;
use agentq_shared::store::StepRun;
use agentq_shared::tools::{ToolContext, ToolResult};
use chrono::Utc;

use super::guard::{Interrupt, guarded};
use crate::Context;

pub enum Acted {
    /// Every call has its result and the session moved on.
    Done,
    /// The turn waits for a human.
    Waiting,
    Interrupted(Interrupt),
}

pub async fn act(ctx: &Context, run: &mut StepRun, mut cancel_seen: bool) -> anyhow::Result<Acted> {
    let id = run.session_id();
    let n = run.step;
    let session_tools = run.state.record.run.tools.clone();
    let deadline = run.state.record.deadline_at;
    let Some(step) = run.current().cloned() else {
        anyhow::bail!("step {n} has no decision to act on");
    };
    let offered = |tool: &str| session_tools.iter().any(|t| t == tool);
    let needs_approval =
        |tool: &str| offered(tool) && ctx.tools.get(tool).is_some_and(|d| d.requires_approval);
    if step.actions.iter().any(|c| needs_approval(&c.tool)) && step.approval.is_none() {
        // The approver sees every call of the turn, and none runs before the decision.
        // The request's own window, else the deployment's.
        let window = run.state.record.run.approval_timeout_secs.map_or(
            ctx.config.durability.approval_ttl,
            std::time::Duration::from_secs,
        );
        let expires_at = Utc::now() + window;
        let ids = crate::prompt::tool_use_ids(&step.llm_content);
        let reviews: Vec<CallReview> = step
            .actions
            .iter()
            .enumerate()
            .map(|(i, c)| CallReview {
                id: ids.get(i).cloned(),
                requires_approval: needs_approval(&c.tool),
                details: offered(&c.tool)
                    .then(|| ctx.tools.approval_details(&c.tool, &c.args))
                    .flatten(),
            })
            .collect();
        ctx.store.await_approval(run, expires_at, &reviews).await?;
        metrics::counter!("agentq_steps_total", "outcome" => "awaiting_approval").increment(1);
        tracing::info!("waiting for approval");
        return Ok(Acted::Waiting);
    }
    let lease = run.lease.clone();
    for (i, call) in step
        .actions
        .iter()
        .enumerate()
        .skip(step.observations.len())
    {
        if cancel_seen {
            return Ok(Acted::Interrupted(Interrupt::Cancelled));
        }
        let idempotent = ctx.tools.is_idempotent(&call.tool, &call.args);
        let result = if !offered(&call.tool) {
            ToolResult::failure(
                &call.tool,
                format!(
                    "unknown tool {:?}; the tools available in this session are: [{}]",
                    call.tool,
                    session_tools.join(", ")
                ),
                0,
            )
        } else if step.rejected() && needs_approval(&call.tool) {
            let reason = step
                .approval
                .as_ref()
                .and_then(|a| a.reason.as_deref())
                .unwrap_or("no reason given");
            ToolResult::failure(
                &call.tool,
                format!("a human reviewer rejected this tool call: {reason}"),
                0,
            )
        } else if !idempotent && !ctx.store.mark_call_started(run, i).await? {
            ToolResult::failure(
                &call.tool,
                "interrupted, outcome unknown: the worker running this tool stopped before recording \
                 its result, and the tool has side effects, so it was not run again",
                0,
            )
        } else {
            let tool_ctx = ToolContext {
                session_id: id,
                step: n,
            };
            let started = std::time::Instant::now();
            let running = ctx.tools.run(&call.tool, call.args.clone(), &tool_ctx);
            match guarded(ctx, &lease, deadline, running).await {
                Ok(result) => {
                    measure(
                        &call.tool,
                        if result.success { "ok" } else { "error" },
                        started,
                    );
                    result
                }
                Err(interrupt) => {
                    measure(&call.tool, "interrupted", started);
                    if interrupt != Interrupt::LeaseLost {
                        let stopped = ToolResult::failure(
                            &call.tool,
                            format!("stopped: {}", interrupt_text(interrupt)),
                            0,
                        );
                        let stopped = serde_json::to_value(&stopped)?;
                        ctx.store.record_observation(run, i, stopped, false).await?;
                    }
                    return Ok(Acted::Interrupted(interrupt));
                }
            }
        };
        let result = serde_json::to_value(&result)?;
        cancel_seen = ctx.store.record_observation(run, i, result, true).await?;
    }
    Ok(Acted::Done)
}

/// A tool call in the metrics: count by outcome, latency, by tool.
fn measure(tool: &str, outcome: &'static str, started: std::time::Instant) {
    metrics::counter!("agentq_tool_calls_total", "tool" => tool.to_owned(), "outcome" => outcome)
        .increment(1);
    metrics::histogram!("agentq_tool_call_duration_seconds", "tool" => tool.to_owned())
        .record(started.elapsed().as_secs_f64());
}

fn interrupt_text(interrupt: Interrupt) -> &'static str {
    match interrupt {
        Interrupt::Cancelled => "the session was cancelled",
        Interrupt::DeadlinePassed => "the session's deadline passed",
        Interrupt::LeaseLost => "another worker took the session over",
    }
}
