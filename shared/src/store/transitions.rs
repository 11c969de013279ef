//! Session status changes. Each is a compare-and-set that never leaves a terminal state and bumps
//! `version` (so the Redis snapshot can tell newer from older); the worker's carry its lease's
//! fence, so a worker that lost the lease changes nothing.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::lease::{Lease, LeaseLost};
use super::{Principal, Store, WriteError, pg_safe};
use crate::schemas::{CallReview, SessionError, SessionStatus};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The flag is set (now or before); the worker stops the session at its next check.
    Requested,
    /// No worker was running it: the session is cancelled now.
    Cancelled,
    AlreadyFinished(SessionStatus),
    NotFound,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApprovalOutcome {
    /// Recorded; the step must be enqueued again to act on it.
    Recorded,
    NotFound,
    /// Not awaiting approval of that step (message says what it is doing).
    Conflict(String),
    /// The approval window closed; the session has failed `approval_expired`.
    Expired,
}

impl Store {
    /// Cancels an unfinished session of this org. A session no worker holds (awaiting approval,
    /// or between steps) is cancelled at once, its fence bumped so a worker whose lease had run
    /// out can write nothing more; one a worker is running gets the flag (Postgres, then Redis)
    /// and its worker stops it at the next check. Asking twice is fine.
    #[tracing::instrument(skip_all, fields(session_id = %id))]
    pub async fn request_cancel(&self, id: Uuid, org_id: Uuid) -> sqlx::Result<CancelOutcome> {
        let updated = sqlx::query_scalar!(
            "WITH target AS (
                 SELECT id, (status = 'awaiting_approval' OR lease_until IS NULL
                             OR lease_until < now()) AS idle
                 FROM sessions
                 WHERE id = $1 AND org_id = $2
                   AND status IN ('pending', 'running', 'awaiting_approval')
                 FOR UPDATE)
             UPDATE sessions s SET cancel_requested = true,
                 status = CASE WHEN t.idle THEN 'cancelled' ELSE s.status END,
                 fence = CASE WHEN t.idle THEN s.fence + 1 ELSE s.fence END,
                 lease_owner = CASE WHEN t.idle THEN NULL ELSE s.lease_owner END,
                 lease_until = CASE WHEN t.idle THEN NULL ELSE s.lease_until END,
                 approval_expires_at = CASE WHEN t.idle THEN NULL ELSE s.approval_expires_at END,
                 version = s.version + 1, updated_at = now()
             FROM target t WHERE s.id = t.id
             RETURNING s.status",
            id,
            org_id,
        )
        .fetch_optional(&self.pg)
        .await?;
        if let Some(status) = updated {
            self.set_cancel_flag(id).await;
            return Ok(match SessionStatus::parse(&status) {
                Some(SessionStatus::Cancelled) => CancelOutcome::Cancelled,
                _ => CancelOutcome::Requested,
            });
        }
        let row = sqlx::query!("SELECT org_id, status FROM sessions WHERE id = $1", id)
            .fetch_optional(&self.pg)
            .await?;
        Ok(match row {
            Some(row) if row.org_id == org_id => CancelOutcome::AlreadyFinished(
                SessionStatus::parse(&row.status).unwrap_or(SessionStatus::Failed),
            ),
            _ => CancelOutcome::NotFound,
        })
    }

    /// The cancel check before an LLM or tool call: the Redis flag, then Postgres (the truth,
    /// which still holds the flag if Redis lost it).
    pub async fn cancel_requested(&self, id: Uuid) -> sqlx::Result<bool> {
        if self.cancel_flagged(id).await {
            return Ok(true);
        }
        let flagged =
            sqlx::query_scalar!("SELECT cancel_requested FROM sessions WHERE id = $1", id)
                .fetch_optional(&self.pg)
                .await?;
        Ok(flagged.unwrap_or(false))
    }

    /// `pending` becomes `running`; any other state is left alone.
    pub async fn mark_running(&self, lease: &Lease) -> sqlx::Result<bool> {
        let updated = sqlx::query!(
            "UPDATE sessions SET status = 'running', version = version + 1, updated_at = now()
             WHERE id = $1 AND status = 'pending' AND fence = $2",
            lease.session_id,
            lease.fence,
        )
        .execute(&self.pg)
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    /// Moves an unfinished session to a terminal state; false if it had already finished or
    /// (with a fence) the lease moved on.
    #[tracing::instrument(skip_all, fields(session_id = %id, status = %status))]
    pub async fn finish_session(
        &self,
        id: Uuid,
        fence: Option<i64>,
        status: SessionStatus,
        final_answer: Option<&str>,
        error: Option<&SessionError>,
    ) -> sqlx::Result<bool> {
        debug_assert!(status.is_terminal());
        let final_answer = pg_safe::opt_text(final_answer);
        let message = error.map(|e| pg_safe::text(&e.message));
        let updated = sqlx::query!(
            "UPDATE sessions SET status = $2, final_answer = $3, error_code = $4, error_message = $5,
                 lease_owner = NULL, lease_until = NULL, approval_expires_at = NULL,
                 version = version + 1, updated_at = now()
             WHERE id = $1 AND ($6::bigint IS NULL OR fence = $6)
               AND status IN ('pending', 'running', 'awaiting_approval')",
            id,
            status.as_str(),
            final_answer.as_deref(),
            error.map(|e| e.code.as_str()),
            message.as_deref(),
            fence,
        )
        .execute(&self.pg)
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    /// Compare-and-set of `next_step` from `step` to `step + 1`, releasing the lease in the same
    /// write so the next step's job can take it at once.
    #[tracing::instrument(skip_all, fields(session_id = %lease.session_id, step))]
    pub async fn advance(&self, lease: &Lease, step: u32) -> Result<(), WriteError> {
        let updated = sqlx::query!(
            "UPDATE sessions SET next_step = $2 + 1, lease_owner = NULL, lease_until = NULL,
                 step_attempts = 0, version = version + 1, updated_at = now()
             WHERE id = $1 AND next_step = $2 AND fence = $3
               AND status IN ('pending', 'running', 'awaiting_approval')",
            lease.session_id,
            step as i32,
            lease.fence,
        )
        .execute(&self.pg)
        .await?;
        if updated.rows_affected() == 0 && !self.holds_lease(lease).await? {
            return Err(LeaseLost(lease.session_id).into());
        }
        Ok(())
    }

    /// The step's turn needs a human: wait for one until `expires_at`, without the lease; what
    /// the approver must see of each call (`reviews`, one per call) is kept with the step.
    pub async fn await_approval(
        &self,
        lease: &Lease,
        step: u32,
        expires_at: DateTime<Utc>,
        reviews: &[CallReview],
    ) -> Result<(), WriteError> {
        let reviews = pg_safe::to_json(reviews).map_err(|e| sqlx::Error::Encode(e.into()))?;
        sqlx::query!(
            "UPDATE steps SET approval_details = $3
             WHERE session_id = $1 AND step_index = $2
               AND EXISTS (SELECT 1 FROM sessions WHERE id = $1 AND fence = $4)",
            lease.session_id,
            step as i32,
            Some(sqlx::types::Json(reviews)) as _,
            lease.fence,
        )
        .execute(&self.pg)
        .await?;
        let updated = sqlx::query!(
            "UPDATE sessions SET status = 'awaiting_approval', approval_expires_at = $3,
                 lease_owner = NULL, lease_until = NULL, step_attempts = 0,
                 version = version + 1, updated_at = now()
             WHERE id = $1 AND fence = $2 AND status IN ('pending', 'running')",
            lease.session_id,
            lease.fence,
            expires_at,
        )
        .execute(&self.pg)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(LeaseLost(lease.session_id).into());
        }
        Ok(())
    }

    /// Records a human's decision on the tool call of `step` and puts the session back to
    /// `running`, in one transaction.
    #[tracing::instrument(skip_all, fields(session_id = %id, step))]
    pub async fn decide_approval(
        &self,
        id: Uuid,
        who: Principal,
        step: u32,
        approved: bool,
        reason: Option<&str>,
    ) -> sqlx::Result<ApprovalOutcome> {
        let reason = pg_safe::opt_text(reason);
        let mut tx = self.pg.begin().await?;
        let row = sqlx::query!(
            r#"SELECT org_id, status, next_step,
                    COALESCE(approval_expires_at < now(), false) AS "expired!"
             FROM sessions WHERE id = $1 FOR UPDATE"#,
            id,
        )
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row.filter(|r| r.org_id == who.org_id) else {
            return Ok(ApprovalOutcome::NotFound);
        };
        let (status, next_step) = (row.status, row.next_step);
        if status != "awaiting_approval" {
            return Ok(ApprovalOutcome::Conflict(format!(
                "the session is {status}, not awaiting approval"
            )));
        }
        if next_step != step as i32 {
            return Ok(ApprovalOutcome::Conflict(format!(
                "step {step} is not awaiting approval; step {next_step} is"
            )));
        }
        if row.expired {
            tx.rollback().await?;
            self.expire_approval(id).await?;
            return Ok(ApprovalOutcome::Expired);
        }
        sqlx::query!(
            "UPDATE steps SET approval = $3, approval_reason = $4, approved_by = $5, approved_at = now()
             WHERE session_id = $1 AND step_index = $2 AND approval IS NULL",
            id,
            step as i32,
            if approved { "approved" } else { "rejected" },
            reason.as_deref(),
            who.key_id,
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query!(
            "UPDATE sessions SET status = 'running', approval_expires_at = NULL,
                 version = version + 1, updated_at = now()
             WHERE id = $1",
            id,
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(ApprovalOutcome::Recorded)
    }

    /// Fails a session whose approval window has closed.
    pub async fn expire_approval(&self, id: Uuid) -> sqlx::Result<bool> {
        let updated = sqlx::query!(
            "UPDATE sessions SET status = 'failed', error_code = 'approval_expired',
                 error_message = 'no one approved or rejected the pending tool call in time',
                 approval_expires_at = NULL, version = version + 1, updated_at = now()
             WHERE id = $1 AND status = 'awaiting_approval' AND approval_expires_at < now()",
            id,
        )
        .execute(&self.pg)
        .await?;
        Ok(updated.rows_affected() == 1)
    }
}
