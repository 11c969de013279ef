//! Advance (step protocol, 7): the session moves to the next step (in the same write as the
//! step's last result, or here if that write came from an earlier delivery), then the next
//! step's job is pushed. A crash between the two is repaired by redelivery (lease.rs pushes
//! again) or by the reconciler.

use agentq_shared::queue::{Push, StepJob};
use agentq_shared::store::StepRun;

use crate::Context;

pub async fn advance(ctx: &Context, run: &mut StepRun) -> anyhow::Result<()> {
    ctx.store.advance(run).await?;
    metrics::counter!("agentq_steps_total", "outcome" => "advanced").increment(1);
    let next = StepJob::new(run.session_id(), run.step + 1, run.traceparent.clone())
        .of_org(run.state.record.org_id);
    ctx.queue.push(next, Push::Next).await?;
    tracing::debug!("step done; the next one is queued");
    Ok(())
}
