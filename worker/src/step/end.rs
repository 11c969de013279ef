//! The one place a session ends: completed with its answer, failed with a `FailureCode`, or
//! cancelled. A decision that ends the session (a final answer, or unusable output kept for the
//! record) is stored in the same write as the ending. The slot the session held under its org's
//! cap goes to the org's oldest queued session.

use agentq_shared::queue::START_AT_ONCE;
use agentq_shared::store::{Decision, Ending, LlmCallRecord, StepRun};

use crate::Context;

/// How a step ends its session.
pub enum Finish {
    Ending(Ending),
    /// The step's decision and the ending it leads to.
    Decided(Box<Concluded>),
}

/// A decision that ends the session, with the ledger record of the call that made it.
pub struct Concluded {
    pub call: Option<LlmCallRecord>,
    pub decision: Decision,
    pub ending: Ending,
}

pub async fn finish(ctx: &Context, run: &mut StepRun, finish: Finish) -> anyhow::Result<()> {
    let wanted = match &finish {
        Finish::Ending(ending) => ending.status(),
        Finish::Decided(concluded) => concluded.ending.status(),
    };
    let ended = match finish {
        Finish::Ending(ending) => ctx.store.end(run, &ending).await?,
        Finish::Decided(concluded) => {
            let Concluded {
                call,
                decision,
                ending,
            } = *concluded;
            ctx.store
                .record_decision(run, call.as_ref(), &decision, Some(&ending))
                .await?;
            true
        }
    };
    let record = &run.state.record;
    if ended {
        metrics::counter!("agentq_steps_total", "outcome" => "ended").increment(1);
        let code = record.error.as_ref().map(|e| e.code.as_str());
        tracing::info!(status = %record.status, %wanted, code, "session finished");
        // The slot it held goes to its org's oldest queued session, if any.
        ctx.queue
            .start_queued(&ctx.store, Some(record.org_id), START_AT_ONCE)
            .await;
    } else {
        tracing::debug!(%wanted, "the session had already ended");
    }
    Ok(())
}
