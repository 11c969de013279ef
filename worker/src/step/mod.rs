//! The step protocol (ARCHITECTURE.md, "The step protocol"): a `StepJob(s, n)` makes step n of
//! session s happen, whatever happened before.
//!
//! Delivery is at least once, duplicates can run at the same time, and a worker can die between
//! any two lines. So: one worker at a time holds the session's lease (`lease.rs`), and every
//! write checks the lease's fence (a worker that lost it changes nothing); every effect is keyed
//! by `(s, n)` and written once: the decision (`decide.rs`) only where none is stored, each
//! call's start mark and result (`act.rs`) only where none is stored, the advance
//! (`advance.rs`) by compare-and-set. A redelivered job finds what was done and goes on from
//! there. A tool whose outcome a crash lost runs again only if it is idempotent; otherwise its
//! observation says the outcome is unknown. Every way a session ends goes through `end.rs`.
//!
//! Returning `Ok(())` acks the job; an `Err` (the store unreachable) lets apalis retry it.

mod act;
mod advance;
mod budget;
mod decide;
mod end;
mod guard;
mod lease;
mod llm_call;

use std::sync::Arc;

use agentq_shared::queue::StepJob;
use agentq_shared::schemas::FailureCode;
use agentq_shared::store::{Ending, StepRun, StoreError};
use agentq_shared::telemetry;
use apalis::prelude::{BoxDynError, Data};
use chrono::Utc;
use tracing::Instrument;

use crate::Context;
use act::Acted;
use decide::Decided;
use end::Finish;
use guard::Interrupt;

pub async fn handle(job: StepJob, ctx: Data<Arc<Context>>) -> Result<(), BoxDynError> {
    // Held while the step runs: the worker fetches more only with room (fair share).
    let _slot = ctx.queue.occupy();
    let span = tracing::info_span!("step", session_id = %job.session_id, step = job.step,
        trace_id = tracing::field::Empty);
    // The step joins the session's trace, begun by the API's POST.
    telemetry::continue_trace(&span, job.traceparent.as_deref());
    telemetry::record_trace_id(&span);
    let (id, n) = (job.session_id, job.step);
    run_step(&ctx, job).instrument(span).await.map_err(|e| {
        tracing::error!(session_id = %id, step = n, error = ?e, "step failed; the queue will retry it");
        e.into()
    })
}

fn lease_lost(e: &anyhow::Error) -> bool {
    e.downcast_ref::<StoreError>()
        .is_some_and(StoreError::is_lease_lost)
}

/// Makes step `job.step` of its session happen (public so tests and benchmarks can drive it).
pub async fn run_step(ctx: &Context, job: StepJob) -> anyhow::Result<()> {
    let traceparent = job.traceparent.clone();
    let Some(mut run) = lease::take(ctx, job).await? else {
        return Ok(());
    };
    run.traceparent = traceparent;
    match leased(ctx, &mut run).await {
        Ok(()) => Ok(()),
        Err(e) if lease_lost(&e) => {
            metrics::counter!("agentq_lease_losses_total").increment(1);
            tracing::info!("lease lost to another worker; it carries the session on");
            Ok(())
        }
        Err(e) => {
            // Let the retry (or another worker) take over at once instead of after the TTL.
            let _ = ctx.store.release_lease(&run.lease).await;
            Err(e)
        }
    }
}

async fn leased(ctx: &Context, run: &mut StepRun) -> anyhow::Result<()> {
    let n = run.step;
    let record = &run.state.record;
    if record.cancel_requested {
        return end::finish(ctx, run, Finish::Ending(Ending::Cancelled)).await;
    }
    let max_attempts = ctx.config.durability.step_max_attempts.max(1);
    if run.lease.attempt > max_attempts {
        // Whatever made the earlier deliveries fail will make the next fail too.
        let message = format!(
            "step {n} failed on each of its {max_attempts} attempts (AGENTQ_STEP_MAX_ATTEMPTS), \
             so the session was stopped instead of repeating it; the worker log has each error"
        );
        let ending = Ending::failed(FailureCode::StepRetriesExhausted, message);
        return end::finish(ctx, run, Finish::Ending(ending)).await;
    }
    if n >= record.run.max_steps {
        let message = format!(
            "the agent used all {} steps without a final answer",
            record.run.max_steps
        );
        let ending = Ending::failed(FailureCode::MaxStepsExceeded, message);
        return end::finish(ctx, run, Finish::Ending(ending)).await;
    }
    if Utc::now() >= record.deadline_at {
        return interrupted(ctx, run, Interrupt::DeadlinePassed).await;
    }

    let cancel_seen = match run.current() {
        Some(_) => false,
        None => match decide::decide(ctx, run).await? {
            Decided::Stored { cancel_seen } => cancel_seen,
            Decided::Finished(finish) => return end::finish(ctx, run, finish).await,
            Decided::Interrupted(interrupt) => return interrupted(ctx, run, interrupt).await,
        },
    };
    let Some(step) = run.current() else {
        anyhow::bail!("step {n} has no decision after deciding");
    };
    if step.is_final {
        // Stored by an earlier delivery that stopped before ending the session.
        let ending = match step.final_answer.clone() {
            Some(final_answer) => Ending::Completed { final_answer },
            None => Ending::failed(
                FailureCode::InvalidModelOutput,
                "the model's answer could not be used",
            ),
        };
        return end::finish(ctx, run, Finish::Ending(ending)).await;
    }
    if !step.acted() {
        if let Some(message) = budget::over_budget(run) {
            let ending = Ending::failed(FailureCode::BudgetExceeded, message);
            return end::finish(ctx, run, Finish::Ending(ending)).await;
        }
        match act::act(ctx, run, cancel_seen).await? {
            Acted::Done => {}
            Acted::Waiting => return Ok(()),
            Acted::Interrupted(interrupt) => return interrupted(ctx, run, interrupt).await,
        }
    }
    advance::advance(ctx, run).await
}

/// A step stopped by a cancel, its deadline, or a lost lease.
async fn interrupted(ctx: &Context, run: &mut StepRun, interrupt: Interrupt) -> anyhow::Result<()> {
    let ending = match interrupt {
        Interrupt::Cancelled => Ending::Cancelled,
        Interrupt::DeadlinePassed => Ending::failed(
            FailureCode::DeadlineExceeded,
            "the session did not finish before its deadline",
        ),
        Interrupt::LeaseLost => return Err(StoreError::LeaseLost(run.session_id()).into()),
    };
    end::finish(ctx, run, Finish::Ending(ending)).await
}
