//! The step protocol (ARCHITECTURE.md, "The step protocol"): a `StepJob(s, n)` makes step n of
//! session s happen, whatever happened before.
//!
//! Delivery is at least once and a worker can die between any two lines, so every effect is keyed
//! by `(s, n)` in Postgres and written once: the decision with `ON CONFLICT DO NOTHING`, the tool's
//! start mark and observation only where none is stored, the advance by compare-and-set. A
//! redelivered or duplicated job finds what was already done and goes on from there; a tool with
//! side effects whose outcome was lost is not run again but recorded as "outcome unknown".
//! Returning `Ok(())` acks the job; an `Err` (Postgres or Redis unreachable) lets apalis retry it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agentq_shared::queue::{self, StepJob};
use agentq_shared::schemas::{SessionError, SessionStatus};
use agentq_shared::store::{Decision, LlmCallRecord, SessionRow, StepRow};
use agentq_shared::tools::{ToolContext, ToolResult};
use anyhow::Context as _;
use apalis::prelude::{BoxDynError, Data};
use chrono::Utc;
use serde_json::json;
use tracing::Instrument;
use uuid::Uuid;

use crate::Context;
use crate::llm::{LlmError, LlmResponse};
use crate::prompt;

pub async fn handle(job: StepJob, ctx: Data<Arc<Context>>) -> Result<(), BoxDynError> {
    let span = tracing::info_span!("step", session_id = %job.session_id, step = job.step);
    run_step(&ctx, job).instrument(span).await.map_err(|e| {
        tracing::error!(session_id = %job.session_id, step = job.step, error = ?e, "step failed; the queue will retry it");
        e.into()
    })
}

pub async fn run_step(ctx: &Context, job: StepJob) -> anyhow::Result<()> {
    let StepJob {
        session_id: id,
        step: n,
    } = job;
    let Some(session) = ctx.store.session_row(id).await? else {
        tracing::warn!("job for an unknown session; dropped");
        return Ok(());
    };
    if session.status.is_terminal() {
        return Ok(());
    }
    if session.cancel_requested {
        return end(ctx, id, SessionStatus::Cancelled, None, None).await;
    }
    if n != session.next_step {
        if n + 1 == session.next_step {
            // Crashed after advancing but before the push: push again (a no-op if it was pushed).
            enqueue(ctx, id, session.next_step).await?;
        }
        tracing::debug!(
            next_step = session.next_step,
            "not the current step; duplicate job acked"
        );
        return Ok(());
    }
    if n >= session.run.max_steps {
        let message = format!(
            "the agent used all {} steps without a final answer",
            session.run.max_steps
        );
        return fail(ctx, id, "max_steps_exceeded", message).await;
    }
    if ctx.store.mark_running(id).await? {
        ctx.store.refresh_snapshot(id).await?;
    }

    let step = match ctx.store.step(id, n).await? {
        Some(step) => step,
        None => match decide(ctx, &session, n).await? {
            Some(step) => step,
            None => return Ok(()),
        },
    };
    if step.is_final {
        let answer = step.final_answer.as_deref().unwrap_or_default();
        if ctx.store.cancel_requested(id).await? {
            return end(ctx, id, SessionStatus::Cancelled, None, None).await;
        }
        return end(ctx, id, SessionStatus::Completed, Some(answer), None).await;
    }
    if step.observation.is_none() && !act(ctx, &session, n, &step).await? {
        return Ok(());
    }
    ctx.store.advance(id, n).await?;
    enqueue(ctx, id, n + 1).await
}

/// Decide: call the LLM (unless a decision is stored) and store what it chose. `None` when the
/// session ended instead (cancelled, or the LLM failed for good).
async fn decide(ctx: &Context, session: &SessionRow, n: u32) -> anyhow::Result<Option<StepRow>> {
    let id = session.id;
    if ctx.store.cancel_requested(id).await? {
        end(ctx, id, SessionStatus::Cancelled, None, None).await?;
        return Ok(None);
    }
    let started_at = Utc::now();
    let history = ctx.store.steps_before(id, n).await?;
    let tools = ctx.tools.anthropic_definitions(&session.run.tools);
    let request = prompt::build(&session.run, &history, tools, ctx.config.llm.max_tokens);
    let response = match call_llm(ctx, id, n, &request).await? {
        Ok(response) => response,
        Err(e) => {
            fail(ctx, id, "llm_error", e.to_string()).await?;
            return Ok(None);
        }
    };
    let turn = prompt::parse_turn(&response.content);
    let is_final = turn.action.is_none();
    let decision = Decision {
        thought: if is_final { None } else { turn.thought.clone() },
        llm_content: json!(response.content),
        final_answer: if is_final {
            Some(turn.thought.unwrap_or_default())
        } else {
            None
        },
        action: turn.action,
        is_final,
        started_at,
    };
    let stored = ctx.store.insert_decision(id, n, &decision).await?;
    ctx.store.refresh_snapshot(id).await?;
    Ok(Some(stored))
}

/// One LLM call with bounded retries of transient failures; every attempt goes into the ledger.
async fn call_llm(
    ctx: &Context,
    id: Uuid,
    n: u32,
    request: &crate::llm::LlmRequest,
) -> anyhow::Result<Result<LlmResponse, LlmError>> {
    let attempts = ctx.config.llm.attempts.max(1);
    let mut attempt = 1;
    loop {
        let started = Instant::now();
        let result = ctx.llm.complete(request).await;
        let (usage, http_status, error) = match &result {
            Ok(response) => (response.usage, Some(response.http_status), None),
            Err(e) => (Default::default(), e.http_status(), Some(e.to_string())),
        };
        let cost_usd = ctx.pricing.cost(&request.model, usage);
        if cost_usd.is_none() {
            tracing::warn!(model = %request.model, "no price for this model: cost recorded as unknown");
        }
        ctx.store
            .record_llm_call(&LlmCallRecord {
                session_id: id,
                step_index: n,
                model: request.model.clone(),
                ok: result.is_ok(),
                http_status,
                usage,
                cost_usd,
                duration_ms: started.elapsed().as_millis() as u64,
                error,
            })
            .await
            .context("recording the LLM call in the ledger")?;
        match result {
            Err(e) if e.is_transient() && attempt < attempts => {
                let backoff = Duration::from_millis(500 * 2u64.pow(attempt - 1));
                tracing::warn!(attempt, error = %e, ?backoff, "transient LLM failure; retrying");
                tokio::time::sleep(backoff).await;
                attempt += 1;
            }
            other => return Ok(other),
        }
    }
}

/// Act: run the chosen tool once and store what it returned. False when the session was
/// cancelled instead.
async fn act(ctx: &Context, session: &SessionRow, n: u32, step: &StepRow) -> anyhow::Result<bool> {
    let id = session.id;
    let Some(action) = step.action.as_ref().map(|a| &a.0) else {
        return Ok(true);
    };
    if ctx.store.cancel_requested(id).await? {
        end(ctx, id, SessionStatus::Cancelled, None, None).await?;
        return Ok(false);
    }
    let first_run = ctx.store.mark_tool_started(id, n).await?;
    let repeatable = ctx.tools.get(&action.tool).is_none_or(|d| d.idempotent);
    let result = if !session.run.tools.contains(&action.tool) {
        ToolResult::failure(
            &action.tool,
            format!(
                "unknown tool {:?}; the tools available in this session are: [{}]",
                action.tool,
                session.run.tools.join(", ")
            ),
            0,
        )
    } else if !first_run && !repeatable {
        ToolResult::failure(
            &action.tool,
            "interrupted, outcome unknown: the worker running this tool stopped before recording \
             its result, and the tool has side effects, so it was not run again",
            0,
        )
    } else {
        let tool_ctx = ToolContext {
            session_id: id,
            step: n,
        };
        ctx.tools
            .run(&action.tool, action.args.clone(), &tool_ctx)
            .await
    };
    ctx.store
        .record_observation(id, n, &serde_json::to_value(&result)?)
        .await?;
    ctx.store.refresh_snapshot(id).await?;
    Ok(true)
}

async fn enqueue(ctx: &Context, id: Uuid, step: u32) -> anyhow::Result<()> {
    queue::enqueue(
        &ctx.queue,
        StepJob {
            session_id: id,
            step,
        },
    )
    .await?;
    Ok(())
}

async fn fail(ctx: &Context, id: Uuid, code: &str, message: String) -> anyhow::Result<()> {
    let error = SessionError {
        code: code.to_owned(),
        message,
    };
    end(ctx, id, SessionStatus::Failed, None, Some(&error)).await
}

async fn end(
    ctx: &Context,
    id: Uuid,
    status: SessionStatus,
    final_answer: Option<&str>,
    error: Option<&SessionError>,
) -> anyhow::Result<()> {
    if ctx
        .store
        .finish_session(id, status, final_answer, error)
        .await?
    {
        tracing::info!(%status, "session finished");
    }
    ctx.store.refresh_snapshot(id).await?;
    Ok(())
}
