//! The reconciler's statements: leadership, sessions nobody is moving, approvals that lapsed,
//! deadlines that passed. Postgres is the truth, so the queue can always be rebuilt from here.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::pool::PoolConnection;
use uuid::Uuid;

use super::super::error::StoreResult;
use super::super::model::{Head, Repair};
use super::rows::HeadRow;

/// Any fixed 64-bit number, the same in every worker ("agentqrc").
const ADVISORY_LOCK: i64 = 0x6167_656e_7471_7263;

/// A connection holding the reconciler's advisory lock, or `None` if another process holds it.
/// The lock lasts as long as the connection: if its process dies, another takes over.
pub(super) async fn lead(pool: &PgPool) -> StoreResult<Option<PoolConnection<sqlx::Postgres>>> {
    let mut conn = pool.acquire().await?;
    let locked = sqlx::query_scalar!(
        r#"SELECT pg_try_advisory_lock($1) AS "locked!""#,
        ADVISORY_LOCK
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(locked.then_some(conn))
}

/// Claims up to `limit` unfinished sessions (not awaiting a human) with no live lease and no
/// change (nor repair) for `idle`. Claiming bumps the fence, so a stale holder can no longer
/// write, and sets `repaired_at`, so the session isn't claimed again before another `idle`;
/// nothing a poll shows changes.
pub(super) async fn claim_stalled(
    pool: &PgPool,
    idle: Duration,
    limit: i64,
) -> StoreResult<Vec<Repair>> {
    let rows = sqlx::query!(
        "UPDATE sessions SET fence = fence + 1, repaired_at = now()
         WHERE id IN (
             SELECT id FROM sessions
             WHERE status IN ('pending', 'running')
               AND (lease_until IS NULL OR lease_until < now())
               AND updated_at < now() - make_interval(secs => $1)
               AND (repaired_at IS NULL OR repaired_at < now() - make_interval(secs => $1))
             ORDER BY updated_at LIMIT $2
             FOR UPDATE SKIP LOCKED)
         RETURNING id, next_step, fence",
        idle.as_secs_f64(),
        limit,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| Repair {
            session_id: row.id,
            next_step: row.next_step.max(0) as u32,
            fence: row.fence,
        })
        .collect())
}

/// Fails every session whose approval window closed.
pub(super) async fn expire_lapsed_approvals(pool: &PgPool) -> StoreResult<Vec<Head>> {
    let rows = sqlx::query_as!(
        HeadRow,
        "UPDATE sessions SET status = 'failed', error_code = 'approval_expired',
             error_message = 'no one approved or rejected the pending tool call in time',
             approval_expires_at = NULL, version = version + 1, updated_at = now()
         WHERE status = 'awaiting_approval' AND approval_expires_at < now()
         RETURNING id, status, next_step, final_answer, error_code, error_message,
                   cancel_requested, version, approval_expires_at, updated_at",
    )
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(HeadRow::head).collect()
}

/// Fails one session whose approval window closed (an approval that came too late).
pub(super) async fn expire_one(pool: &PgPool, id: Uuid) -> StoreResult<Option<Head>> {
    let row = sqlx::query_as!(
        HeadRow,
        "UPDATE sessions SET status = 'failed', error_code = 'approval_expired',
             error_message = 'no one approved or rejected the pending tool call in time',
             approval_expires_at = NULL, version = version + 1, updated_at = now()
         WHERE id = $1 AND status = 'awaiting_approval' AND approval_expires_at < now()
         RETURNING id, status, next_step, final_answer, error_code, error_message,
                   cancel_requested, version, approval_expires_at, updated_at",
        id,
    )
    .fetch_optional(pool)
    .await?;
    row.map(HeadRow::head).transpose()
}

/// Fails every unfinished session past its deadline that no worker holds. (A worker holding one
/// stops it itself when the deadline passes.)
pub(super) async fn fail_overdue(pool: &PgPool) -> StoreResult<Vec<Head>> {
    let rows = sqlx::query_as!(
        HeadRow,
        "UPDATE sessions SET status = 'failed', error_code = 'deadline_exceeded',
             error_message = 'the session did not finish before its deadline',
             approval_expires_at = NULL, version = version + 1, updated_at = now()
         WHERE status IN ('pending', 'running', 'awaiting_approval') AND deadline_at < now()
           AND (lease_until IS NULL OR lease_until < now())
         RETURNING id, status, next_step, final_answer, error_code, error_message,
                   cancel_requested, version, approval_expires_at, updated_at",
    )
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(HeadRow::head).collect()
}

/// Forgets idempotency keys older than `keep`.
pub(super) async fn forget_idempotency_keys(pool: &PgPool, keep: Duration) -> StoreResult<u64> {
    let deleted = sqlx::query!(
        "DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(secs => $1)",
        keep.as_secs_f64(),
    )
    .execute(pool)
    .await?;
    Ok(deleted.rows_affected())
}
