//! The step protocol (ARCHITECTURE.md, "The step protocol"): a `StepJob(s, n)` makes step n of
//! session s happen, whatever happened before.
//!
//! Delivery is at least once, duplicates can run at the same time, and a worker can die between
//! any two lines. So: one worker at a time holds the session's lease, and every write checks the
//! lease's fence (a worker that lost it changes nothing); every effect is keyed by `(s, n)` and
//! written once — the decision with `ON CONFLICT DO NOTHING`, the tool's start mark and its
//! observation only where none is stored, the advance by compare-and-set. A redelivered job finds
//! what was done and goes on from there. A tool whose outcome a crash lost runs again only if it
//! is idempotent; otherwise its observation says the outcome is unknown.
//!
//! Returning `Ok(())` acks the job; an `Err` (Postgres or Redis unreachable) lets apalis retry it.

use std::sync::Arc;
use std::time::Duration;

use agentq_shared::queue::{self, StepJob};
use agentq_shared::schemas::{CallReview, SessionError, SessionStatus};
use agentq_shared::store::{Lease, LeaseLost, SessionRow, StepRow, WriteError};
use agentq_shared::tools::{ToolContext, ToolResult};
use apalis::prelude::{BoxDynError, Data};
use chrono::Utc;
use tracing::Instrument;
use uuid::Uuid;

use crate::Context;
use crate::decide::{decide, fail, over_budget};
use crate::guard::{Interrupt, guarded};

pub async fn handle(job: StepJob, ctx: Data<Arc<Context>>) -> Result<(), BoxDynError> {
    let span = tracing::info_span!("step", session_id = %job.session_id, step = job.step);
    run_step(&ctx, job).instrument(span).await.map_err(|e| {
        tracing::error!(session_id = %job.session_id, step = job.step, error = ?e, "step failed; the queue will retry it");
        e.into()
    })
}

/// How a step stopped short of advancing.
pub(crate) enum Stop {
    /// Nothing more for this job to do (the session ended or waits for a human).
    Done,
    Interrupted(Interrupt),
}

fn lease_lost(e: &anyhow::Error) -> bool {
    e.downcast_ref::<LeaseLost>().is_some()
        || matches!(
            e.downcast_ref::<WriteError>(),
            Some(WriteError::LeaseLost(_))
        )
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
    if session.status.is_terminal() || session.status == SessionStatus::AwaitingApproval {
        return Ok(());
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
    let Some(lease) = take_lease_patiently(ctx, id, n).await? else {
        tracing::debug!("another worker holds the session and is alive; duplicate job acked");
        return Ok(());
    };
    // Taking the lease may have waited: read the session again under it.
    let session = match ctx.store.session_row(id).await? {
        Some(s)
            if s.next_step == n
                && matches!(s.status, SessionStatus::Pending | SessionStatus::Running) =>
        {
            s
        }
        _ => {
            ctx.store.release_lease(&lease).await?;
            return Ok(());
        }
    };
    match leased_step(ctx, &session, &lease, n).await {
        Ok(()) => Ok(()),
        Err(e) if lease_lost(&e) => {
            tracing::info!("lease lost to another worker; it carries the session on");
            Ok(())
        }
        Err(e) => {
            // Let the retry (or another worker) take over at once instead of after the TTL.
            let _ = ctx.store.release_lease(&lease).await;
            Err(e)
        }
    }
}

/// Takes the session's lease. If another worker holds it, waits for that lease to run out: a
/// job redelivered after its worker died finds the dead worker's lease still live for up to one
/// TTL. Gives up (`None`: a duplicate) when the holder keeps renewing or moves the session on.
async fn take_lease_patiently(ctx: &Context, id: Uuid, n: u32) -> anyhow::Result<Option<Lease>> {
    let owner = format!("{}/{}", ctx.worker_name, Uuid::new_v4().simple());
    let ttl = ctx.config.durability.lease_ttl;
    let give_up = std::time::Instant::now() + ttl + ttl / 2;
    let pause = (ttl / 10).clamp(Duration::from_millis(50), Duration::from_secs(1));
    loop {
        if let Some(lease) = ctx.store.take_lease(id, &owner, ttl).await? {
            return Ok(Some(lease));
        }
        if std::time::Instant::now() >= give_up {
            return Ok(None);
        }
        tokio::time::sleep(pause).await;
        let still_current = ctx.store.session_row(id).await?.is_some_and(|s| {
            s.next_step == n && matches!(s.status, SessionStatus::Pending | SessionStatus::Running)
        });
        if !still_current {
            return Ok(None);
        }
    }
}

async fn leased_step(
    ctx: &Context,
    session: &SessionRow,
    lease: &Lease,
    n: u32,
) -> anyhow::Result<()> {
    let id = session.id;
    if session.cancel_requested || ctx.store.cancel_requested(id).await? {
        return end(ctx, lease, SessionStatus::Cancelled, None, None).await;
    }
    let max_attempts = ctx.config.durability.step_max_attempts.max(1);
    if lease.attempt > max_attempts {
        // Whatever made the earlier deliveries fail will make the next fail too.
        let message = format!(
            "step {n} failed on each of its {max_attempts} attempts (AGENTQ_STEP_MAX_ATTEMPTS), \
             so the session was stopped instead of repeating it; the worker log has each error"
        );
        return fail(ctx, lease, "step_retries_exhausted", message).await;
    }
    if n >= session.run.max_steps {
        let message = format!(
            "the agent used all {} steps without a final answer",
            session.run.max_steps
        );
        return fail(ctx, lease, "max_steps_exceeded", message).await;
    }
    if Utc::now() >= session.deadline_at {
        return interrupted(ctx, lease, Interrupt::DeadlinePassed).await;
    }
    if ctx.store.mark_running(lease).await? {
        ctx.store.refresh_snapshot(id).await?;
    }

    let step = match ctx.store.step(id, n).await? {
        Some(step) => step,
        None => match decide(ctx, session, lease, n).await? {
            Ok(step) => step,
            Err(stop) => return stopped(ctx, lease, stop).await,
        },
    };
    if step.is_final {
        if ctx.store.cancel_requested(id).await? {
            return end(ctx, lease, SessionStatus::Cancelled, None, None).await;
        }
        let Some(answer) = step.final_answer.as_deref() else {
            // Redelivered after the model's unusable output was stored but before the failure.
            let message = "the model's answer could not be used".to_owned();
            return fail(ctx, lease, "invalid_model_output", message).await;
        };
        return end(ctx, lease, SessionStatus::Completed, Some(answer), None).await;
    }
    if !step.acted() {
        if let Some(message) = over_budget(ctx, session).await? {
            return fail(ctx, lease, "budget_exceeded", message).await;
        }
        if let Err(stop) = act(ctx, session, lease, n, &step).await? {
            return stopped(ctx, lease, stop).await;
        }
    }
    ctx.store.advance(lease, n).await?;
    enqueue(ctx, id, n + 1).await
}

/// Act: run the turn's tool calls in order, each once, storing each result; or wait for a
/// human first when one of them needs approval.
async fn act(
    ctx: &Context,
    session: &SessionRow,
    lease: &Lease,
    n: u32,
    step: &StepRow,
) -> anyhow::Result<Result<(), Stop>> {
    let id = session.id;
    let calls = &step.actions.0;
    let offered = |tool: &str| session.run.tools.iter().any(|t| t == tool);
    let needs_approval =
        |tool: &str| offered(tool) && ctx.tools.get(tool).is_some_and(|d| d.requires_approval);
    if calls.iter().any(|c| needs_approval(&c.tool)) && step.approval.is_none() {
        // The approver sees every call of the turn, and none runs before the decision.
        let expires_at = Utc::now() + ctx.config.durability.approval_ttl;
        let ids = crate::prompt::tool_use_ids(&step.llm_content.0);
        let reviews: Vec<CallReview> = calls
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
        ctx.store
            .await_approval(lease, n, expires_at, &reviews)
            .await?;
        ctx.store.refresh_snapshot(id).await?;
        tracing::info!("waiting for approval");
        return Ok(Err(Stop::Done));
    }
    for (i, call) in calls.iter().enumerate().skip(step.observations.0.len()) {
        if ctx.store.cancel_requested(id).await? {
            return Ok(Err(Stop::Interrupted(Interrupt::Cancelled)));
        }
        let first_run = ctx.store.mark_call_started(lease, n, i).await?;
        let result = if !offered(&call.tool) {
            ToolResult::failure(
                &call.tool,
                format!(
                    "unknown tool {:?}; the tools available in this session are: [{}]",
                    call.tool,
                    session.run.tools.join(", ")
                ),
                0,
            )
        } else if step.approval.as_deref() == Some("rejected")
            && ctx
                .tools
                .get(&call.tool)
                .is_some_and(|d| d.requires_approval)
        {
            let reason = step.approval_reason.as_deref().unwrap_or("no reason given");
            ToolResult::failure(
                &call.tool,
                format!("a human reviewer rejected this tool call: {reason}"),
                0,
            )
        } else if !first_run && !ctx.tools.is_idempotent(&call.tool, &call.args) {
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
            let run = ctx.tools.run(&call.tool, call.args.clone(), &tool_ctx);
            match guarded(ctx, lease, session.deadline_at, run).await {
                Ok(result) => result,
                Err(interrupt) => {
                    let stopped = ToolResult::failure(
                        &call.tool,
                        format!("stopped: {}", interrupt_text(interrupt)),
                        0,
                    );
                    if interrupt != Interrupt::LeaseLost {
                        ctx.store
                            .record_call_observation(lease, n, i, &serde_json::to_value(&stopped)?)
                            .await?;
                    }
                    return Ok(Err(Stop::Interrupted(interrupt)));
                }
            }
        };
        ctx.store
            .record_call_observation(lease, n, i, &serde_json::to_value(&result)?)
            .await?;
    }
    ctx.store.refresh_snapshot(id).await?;
    Ok(Ok(()))
}

fn interrupt_text(interrupt: Interrupt) -> &'static str {
    match interrupt {
        Interrupt::Cancelled => "the session was cancelled",
        Interrupt::DeadlinePassed => "the session's deadline passed",
        Interrupt::LeaseLost => "another worker took the session over",
    }
}

async fn stopped(ctx: &Context, lease: &Lease, stop: Stop) -> anyhow::Result<()> {
    match stop {
        Stop::Done => Ok(()),
        Stop::Interrupted(interrupt) => interrupted(ctx, lease, interrupt).await,
    }
}

async fn interrupted(ctx: &Context, lease: &Lease, interrupt: Interrupt) -> anyhow::Result<()> {
    match interrupt {
        Interrupt::Cancelled => end(ctx, lease, SessionStatus::Cancelled, None, None).await,
        Interrupt::DeadlinePassed => {
            fail(
                ctx,
                lease,
                "deadline_exceeded",
                "the session did not finish before its deadline".into(),
            )
            .await
        }
        Interrupt::LeaseLost => Err(LeaseLost(lease.session_id).into()),
    }
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

pub(crate) async fn end(
    ctx: &Context,
    lease: &Lease,
    status: SessionStatus,
    final_answer: Option<&str>,
    error: Option<&SessionError>,
) -> anyhow::Result<()> {
    let id = lease.session_id;
    if ctx
        .store
        .finish_session(id, Some(lease.fence), status, final_answer, error)
        .await?
    {
        tracing::info!(%status, "session finished");
    } else if !ctx.store.holds_lease(lease).await? {
        return Err(LeaseLost(id).into());
    }
    ctx.store.refresh_snapshot(id).await?;
    Ok(())
}
