//! The session lease (step protocol, 2): one worker at a time runs a session's step. Taking the
//! lease bumps the session's `fence`; every write a step makes checks that fence, so a worker
//! that lost its lease (paused, partitioned, presumed dead) cannot commit over its successor.

use std::time::Duration;

use uuid::Uuid;

use super::Store;

/// Proof of holding a session's lease; every step write carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub session_id: Uuid,
    pub owner: String,
    pub fence: i64,
    /// Which delivery of the session's current step this is (1 for the first to take the lease).
    pub attempt: u32,
}

/// A write refused because the writer no longer holds the lease. The job is acked: whoever took
/// the lease over carries the session on.
#[derive(Debug, thiserror::Error)]
#[error("lease of session {0} lost to another worker")]
pub struct LeaseLost(pub Uuid);

impl Store {
    /// Takes the lease if nobody holds a live one; `None` means a live owner has it.
    #[tracing::instrument(skip_all, fields(session_id = %id))]
    pub async fn take_lease(
        &self,
        id: Uuid,
        owner: &str,
        ttl: Duration,
    ) -> sqlx::Result<Option<Lease>> {
        let taken = sqlx::query!(
            "UPDATE sessions
             SET lease_owner = $2, lease_until = now() + make_interval(secs => $3), fence = fence + 1,
                 step_attempts = step_attempts + 1
             WHERE id = $1 AND (lease_until IS NULL OR lease_until < now())
               AND status IN ('pending', 'running', 'awaiting_approval')
             RETURNING fence, step_attempts",
            id,
            owner,
            ttl.as_secs_f64(),
        )
        .fetch_optional(&self.pg)
        .await?;
        Ok(taken.map(|row| Lease {
            session_id: id,
            owner: owner.to_owned(),
            fence: row.fence,
            attempt: row.step_attempts.max(0) as u32,
        }))
    }

    /// Extends the lease; false when it was lost (fence moved on or session finished).
    pub async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> sqlx::Result<bool> {
        let renewed = sqlx::query!(
            "UPDATE sessions SET lease_until = now() + make_interval(secs => $3)
             WHERE id = $1 AND fence = $2 AND lease_owner = $4",
            lease.session_id,
            lease.fence,
            ttl.as_secs_f64(),
            lease.owner,
        )
        .execute(&self.pg)
        .await?;
        Ok(renewed.rows_affected() == 1)
    }

    /// Gives the lease back without other changes (the step is waiting, e.g. for approval).
    pub async fn release_lease(&self, lease: &Lease) -> sqlx::Result<()> {
        sqlx::query!(
            "UPDATE sessions SET lease_owner = NULL, lease_until = NULL
             WHERE id = $1 AND fence = $2",
            lease.session_id,
            lease.fence,
        )
        .execute(&self.pg)
        .await?;
        Ok(())
    }

    /// Whether `lease` is still the current one.
    pub async fn holds_lease(&self, lease: &Lease) -> sqlx::Result<bool> {
        let fence =
            sqlx::query_scalar!("SELECT fence FROM sessions WHERE id = $1", lease.session_id)
                .fetch_optional(&self.pg)
                .await?;
        Ok(fence == Some(lease.fence))
    }
}
