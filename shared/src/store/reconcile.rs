//! Queries of the reconciler: sessions nobody is moving (no live lease, no progress for a while),
//! approvals that lapsed, deadlines that passed. Postgres is the truth, so the queue can always
//! be rebuilt from here.

use std::time::Duration;

use uuid::Uuid;

use super::Store;

/// A stalled session claimed for re-enqueueing; `fence` makes the repair's job id unique.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repair {
    pub session_id: Uuid,
    pub next_step: u32,
    pub fence: i64,
}

impl Store {
    /// Claims up to `limit` unfinished sessions (not awaiting a human) with no live lease and no
    /// change for `idle`. Claiming bumps the fence (a stale holder can no longer write) and
    /// `updated_at` (the same session isn't claimed again before another `idle`).
    pub async fn claim_stalled(&self, idle: Duration, limit: i64) -> sqlx::Result<Vec<Repair>> {
        let rows = sqlx::query!(
            "UPDATE sessions SET fence = fence + 1, updated_at = now()
             WHERE id IN (
                 SELECT id FROM sessions
                 WHERE status IN ('pending', 'running')
                   AND (lease_until IS NULL OR lease_until < now())
                   AND updated_at < now() - make_interval(secs => $1)
                 ORDER BY updated_at LIMIT $2
                 FOR UPDATE SKIP LOCKED)
             RETURNING id, next_step, fence",
            idle.as_secs_f64(),
            limit,
        )
        .fetch_all(&self.pg)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| Repair {
                session_id: row.id,
                next_step: row.next_step as u32,
                fence: row.fence,
            })
            .collect())
    }

    /// Fails every session whose approval window closed; returns their ids.
    pub async fn expire_lapsed_approvals(&self) -> sqlx::Result<Vec<Uuid>> {
        sqlx::query_scalar!(
            "UPDATE sessions SET status = 'failed', error_code = 'approval_expired',
                 error_message = 'no one approved or rejected the pending tool call in time',
                 approval_expires_at = NULL, version = version + 1, updated_at = now()
             WHERE status = 'awaiting_approval' AND approval_expires_at < now()
             RETURNING id",
        )
        .fetch_all(&self.pg)
        .await
    }

    /// Fails every unfinished session past its deadline that no worker holds; returns their ids.
    /// (A worker holding one stops it itself when the deadline passes.)
    pub async fn fail_overdue(&self) -> sqlx::Result<Vec<Uuid>> {
        sqlx::query_scalar!(
            "UPDATE sessions SET status = 'failed', error_code = 'deadline_exceeded',
                 error_message = 'the session did not finish before its deadline',
                 approval_expires_at = NULL, version = version + 1, updated_at = now()
             WHERE status IN ('pending', 'running', 'awaiting_approval') AND deadline_at < now()
               AND (lease_until IS NULL OR lease_until < now())
             RETURNING id",
        )
        .fetch_all(&self.pg)
        .await
    }

    /// Forgets idempotency keys older than `keep`.
    pub async fn forget_idempotency_keys(&self, keep: Duration) -> sqlx::Result<u64> {
        let deleted = sqlx::query!(
            "DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(secs => $1)",
            keep.as_secs_f64(),
        )
        .execute(&self.pg)
        .await?;
        Ok(deleted.rows_affected())
    }
}
