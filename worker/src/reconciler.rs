//! The reconciler: makes sure every unfinished session keeps moving, whatever Redis lost.
//!
//! Postgres is the source of truth, so the queue can always be rebuilt from it. One reconciler is
//! active at a time across all workers (the store's leadership: a Postgres advisory lock held on
//! a dedicated connection; if its worker dies the connection closes and another worker takes
//! over). Each pass:
//! - re-enqueues the next step of every session with no live lease and no change for
//!   `stall_after` (a lost job, a Redis FLUSHALL or restart, a crash between advance and push);
//!   the repair's job carries the fence it bumped, so apalis-redis never swallows it, and a
//!   duplicate it creates is absorbed by the step protocol;
//! - fails sessions whose approval window closed (`approval_expired`) or whose deadline passed
//!   with no worker on them (`deadline_exceeded`);
//! - starts queued sessions whose org has a free slot (normally a session's end starts the
//!   next one at once; this catches what a crash or a failed push missed);
//! - forgets old `Idempotency-Key`s.

use std::sync::Arc;

use agentq_shared::queue::{Push, StepJob};
use agentq_shared::schemas::OnApprovalTimeout;
use agentq_shared::store::{ApprovalDecision, ApprovalOutcome, LapsedApproval, Leadership};

use crate::Context;

const REPAIRS_PER_PASS: i64 = 500;

pub async fn run(ctx: Arc<Context>) {
    let every = ctx.config.durability.reconcile_every;
    let mut leadership: Option<Box<dyn Leadership>> = None;
    loop {
        if leadership.is_none() {
            leadership = match ctx.store.lead().await {
                Ok(Some(held)) => {
                    tracing::info!("this worker is now the active reconciler");
                    Some(held)
                }
                Ok(None) => None,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot try the reconciler lock");
                    None
                }
            };
        }
        if let Some(held) = leadership.as_mut() {
            // A dropped connection released the lock: another worker may hold it now.
            let result = if held.alive().await {
                pass(&ctx).await
            } else {
                Err(anyhow::anyhow!("lock connection lost"))
            };
            if let Err(e) = result {
                tracing::warn!(error = ?e, "reconciler pass failed; dropping the lock and retrying");
                leadership = None;
            }
        }
        tokio::time::sleep(every).await;
    }
}

/// One pass; public so tests and benchmarks can drive it.
pub async fn pass(ctx: &Context) -> anyhow::Result<()> {
    let store = &ctx.store;
    let durability = &ctx.config.durability;
    for id in store.expire_lapsed_approvals().await? {
        tracing::info!(session_id = %id, "approval expired; session failed");
    }
    for lapsed in store.lapsed_approvals(REPAIRS_PER_PASS).await? {
        apply_approval_timeout(ctx, &lapsed).await?;
    }
    for id in store.fail_overdue().await? {
        tracing::info!(session_id = %id, "deadline passed; session failed");
    }
    // Sessions ended above, and any whose end did not start the next queued one (its worker
    // died first, or the push failed), free slots here.
    let started = ctx.queue.start_queued(store, None, REPAIRS_PER_PASS).await;
    if started > 0 {
        tracing::info!(started, "started queued sessions");
    }
    for repair in store
        .claim_stalled(durability.stall_after, REPAIRS_PER_PASS)
        .await?
    {
        let (id, step) = (repair.session_id, repair.next_step);
        let job = StepJob::new(id, step, repair.traceparent);
        ctx.queue
            .push(
                job,
                Push::Repair {
                    fence: repair.fence,
                },
            )
            .await?;
        metrics::counter!("agentq_reconciler_repairs_total").increment(1);
        tracing::info!(session_id = %id, step, "re-enqueued a stalled session");
    }
    store
        .forget_idempotency_keys(durability.idempotency_keep)
        .await?;
    Ok(())
}

/// A held turn nobody decided in time, whose session asked for `reject` or `approve` then: the
/// decision is recorded as a human's would be (no key, the reason saying why) and the step
/// resumes.
async fn apply_approval_timeout(ctx: &Context, lapsed: &LapsedApproval) -> anyhow::Result<()> {
    let approved = lapsed.on_timeout == OnApprovalTimeout::Approve;
    let decision = ApprovalDecision {
        session_id: lapsed.session_id,
        step: lapsed.step,
        org_id: lapsed.org_id,
        decided_by: None,
        on_timeout: true,
        approved,
        reason: Some(format!(
            "no decision within the approval window; on_approval_timeout={}",
            lapsed.on_timeout.as_str()
        )),
    };
    let (outcome, _) = ctx.store.decide_approval(&decision).await?;
    if let ApprovalOutcome::Recorded { traceparent } = outcome {
        tracing::info!(session_id = %lapsed.session_id, step = lapsed.step, approved,
            "approval window closed; on_approval_timeout applied");
        let job = StepJob::new(lapsed.session_id, lapsed.step, traceparent).of_org(lapsed.org_id);
        // If the push fails, the stalled-session repair enqueues the step later.
        if let Err(e) = ctx.queue.push(job, Push::Resume).await {
            tracing::warn!(session_id = %lapsed.session_id, error = %e,
                "cannot enqueue the resumed step yet; a later pass will");
        }
    }
    Ok(())
}
