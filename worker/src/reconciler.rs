//! The reconciler: makes sure every unfinished session keeps moving, whatever Redis lost.
//!
//! Postgres is the source of truth, so the queue can always be rebuilt from it. One reconciler is
//! active at a time across all workers (a Postgres advisory lock held on a dedicated connection;
//! if its worker dies the connection closes and another worker takes over). Each pass:
//! - re-enqueues the next step of every session with no live lease and no change for
//!   `stall_after` (a lost job, a Redis FLUSHALL or restart, a crash between advance and push);
//!   the repair's job id carries the fence it bumped, so apalis-redis never swallows it, and a
//!   duplicate it creates is absorbed by the step protocol;
//! - fails sessions whose approval window closed (`approval_expired`) or whose deadline passed
//!   with no worker on them (`deadline_exceeded`);
//! - forgets old `Idempotency-Key`s.

use std::sync::Arc;

use agentq_shared::queue::{self, StepJob};
use apalis::prelude::TaskId;
use sqlx::Postgres;
use sqlx::pool::PoolConnection;

use crate::Context;

/// Any fixed 64-bit number, the same in every worker.
const ADVISORY_LOCK: i64 = 0x6167_656e_7471_7263; // "agentqrc"
const REPAIRS_PER_PASS: i64 = 500;

pub async fn run(ctx: Arc<Context>) {
    let every = ctx.config.durability.reconcile_every;
    let mut lock: Option<PoolConnection<Postgres>> = None;
    loop {
        if lock.is_none() {
            lock = try_lock(&ctx).await;
        }
        if let Some(conn) = lock.as_mut() {
            // A dropped connection released the lock: another worker may hold it now.
            let alive = sqlx::query!("SELECT 1 AS alive")
                .fetch_one(&mut **conn)
                .await
                .is_ok();
            let result = if alive {
                pass(&ctx).await
            } else {
                Err(anyhow::anyhow!("lock connection lost"))
            };
            if let Err(e) = result {
                tracing::warn!(error = ?e, "reconciler pass failed; dropping the lock and retrying");
                lock = None;
            }
        }
        tokio::time::sleep(every).await;
    }
}

async fn try_lock(ctx: &Context) -> Option<PoolConnection<Postgres>> {
    let attempt = async {
        let mut conn = ctx.store.pg.acquire().await?;
        let locked = sqlx::query_scalar!(
            r#"SELECT pg_try_advisory_lock($1) AS "locked!""#,
            ADVISORY_LOCK
        )
        .fetch_one(&mut *conn)
        .await?;
        Ok::<_, sqlx::Error>((conn, locked))
    };
    let (conn, locked) = match attempt.await {
        Ok(result) => result,
        Err(e) => {
            tracing::warn!(error = %e, "cannot try the reconciler lock");
            return None;
        }
    };
    if locked {
        tracing::info!("this worker is now the active reconciler");
        // Holding the connection holds the lock, for the life of the process.
        Some(conn)
    } else {
        None
    }
}

/// One pass; public so tests and benchmarks can drive it.
pub async fn pass(ctx: &Context) -> anyhow::Result<()> {
    let store = &ctx.store;
    let durability = &ctx.config.durability;
    for id in store.expire_lapsed_approvals().await? {
        tracing::info!(session_id = %id, "approval expired; session failed");
        store.refresh_snapshot(id).await?;
    }
    for id in store.fail_overdue().await? {
        tracing::info!(session_id = %id, "deadline passed; session failed");
        store.refresh_snapshot(id).await?;
    }
    for repair in store
        .claim_stalled(durability.stall_after, REPAIRS_PER_PASS)
        .await?
    {
        let job = StepJob {
            session_id: repair.session_id,
            step: repair.next_step,
        };
        let task_id =
            TaskId::from_string(format!("{}:{}:r{}", job.session_id, job.step, repair.fence));
        queue::enqueue_as(&ctx.queue, job, task_id).await?;
        tracing::info!(session_id = %job.session_id, step = job.step, "re-enqueued a stalled session");
    }
    store
        .forget_idempotency_keys(durability.idempotency_keep)
        .await?;
    Ok(())
}
