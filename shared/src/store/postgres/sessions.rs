//! The API's statements: create a session (with its `Idempotency-Key`, one statement), read a
//! whole session (one statement), cancel, decide an approval.

use sqlx::PgPool;
use sqlx::types::Json;
use uuid::Uuid;

use super::super::durable::{Approved, Cancelled};
use super::super::error::{StoreError, StoreResult};
use super::super::model::{
    ApprovalDecision, ApprovalOutcome, Created, NewSession, SessionState, StepRecord,
};
use super::super::pg_safe;
use super::encode;
use super::rows::{HeadRow, SessionRow, SpendRow, state, status};
use crate::schemas::{SessionStatus, StepApproval, ValidatedRun};

/// Inserts the session, claiming its idempotency key in the same statement. `None` when the key
/// was already claimed (the session is then not created).
pub(super) async fn create(pool: &PgPool, new: &NewSession) -> StoreResult<Option<()>> {
    let request = pg_safe::to_json(&new.run).map_err(encode)?;
    let model = pg_safe::text(&new.run.model);
    let (key, hash) = match &new.idempotency {
        Some(k) => (Some(k.key.as_str()), Some(k.request_hash.as_str())),
        None => (None, None),
    };
    let created = sqlx::query_scalar!(
        r#"WITH claim AS (
               INSERT INTO idempotency_keys (org_id, key, request_hash, session_id)
               SELECT $2, $7, $8, $1 WHERE $7::text IS NOT NULL
               ON CONFLICT (org_id, key) DO NOTHING
               RETURNING session_id
           ), created AS (
               INSERT INTO sessions (id, org_id, model, request, max_steps, deadline_at,
                                     created_at, updated_at)
               SELECT $1, $2, $3, $4, $5, $6, $9, $9
               WHERE $7::text IS NULL OR EXISTS (SELECT 1 FROM claim)
               RETURNING id
           )
           SELECT EXISTS (SELECT 1 FROM created) AS "created!""#,
        new.id,
        new.org_id,
        model.as_ref(),
        Json(request) as _,
        new.run.max_steps as i32,
        new.deadline_at,
        key,
        hash,
        new.created_at,
    )
    .fetch_one(pool)
    .await?;
    Ok(created.then_some(()))
}

/// The session an already claimed key points to, or `KeyReused` for another request.
pub(super) async fn prior(pool: &PgPool, new: &NewSession) -> StoreResult<Created> {
    let Some(key) = &new.idempotency else {
        return Err(StoreError::Backend("session not created".into()));
    };
    let first = sqlx::query!(
        "SELECT request_hash, session_id FROM idempotency_keys WHERE org_id = $1 AND key = $2",
        new.org_id,
        key.key,
    )
    .fetch_one(pool)
    .await?;
    Ok(if first.request_hash == key.request_hash {
        Created::Existing(first.session_id)
    } else {
        Created::KeyReused
    })
}

/// The whole session: its row, its steps and what each step spent, in one statement.
pub(super) async fn load(pool: &PgPool, id: Uuid) -> StoreResult<Option<SessionState>> {
    let row = sqlx::query!(
        r#"SELECT id, org_id, status, request AS "request: Json<ValidatedRun>", next_step,
                  final_answer, error_code, error_message, cancel_requested, version,
                  deadline_at, approval_expires_at, created_at, updated_at,
                  agentq_steps_json(id) AS "steps!: Json<Vec<StepRecord>>",
                  agentq_spend_json(id) AS "spend!: Json<Vec<SpendRow>>"
           FROM sessions WHERE id = $1"#,
        id,
    )
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let session = SessionRow {
        id: row.id,
        org_id: row.org_id,
        status: row.status,
        request: row.request,
        next_step: row.next_step,
        final_answer: row.final_answer,
        error_code: row.error_code,
        error_message: row.error_message,
        cancel_requested: row.cancel_requested,
        version: row.version,
        deadline_at: row.deadline_at,
        approval_expires_at: row.approval_expires_at,
        created_at: row.created_at,
        updated_at: row.updated_at,
    };
    state(session, row.steps.0, row.spend.0).map(Some)
}

/// Cancels an unfinished session of this org: at once when no worker holds it (awaiting
/// approval, or no live lease), bumping the fence so a worker whose lease ran out writes nothing
/// more; otherwise by the flag its worker checks. `None` when nothing changed.
pub(super) async fn cancel(
    pool: &PgPool,
    id: Uuid,
    org_id: Uuid,
) -> StoreResult<Option<super::super::model::Head>> {
    let row = sqlx::query_as!(
        HeadRow,
        r#"WITH target AS (
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
           RETURNING s.id, s.status, s.next_step, s.final_answer, s.error_code, s.error_message,
                     s.cancel_requested, s.version, s.approval_expires_at, s.updated_at"#,
        id,
        org_id,
    )
    .fetch_optional(pool)
    .await?;
    row.map(HeadRow::head).transpose()
}

/// Why a cancel changed nothing: finished already, or not this org's (not found).
pub(super) async fn cancel_refused(
    pool: &PgPool,
    id: Uuid,
    org_id: Uuid,
) -> StoreResult<Cancelled> {
    let row = sqlx::query!("SELECT org_id, status FROM sessions WHERE id = $1", id)
        .fetch_optional(pool)
        .await?;
    Ok(match row {
        Some(row) if row.org_id == org_id => Cancelled::AlreadyFinished(status(&row.status)?),
        _ => Cancelled::NotFound,
    })
}

/// Records a human's decision on the calls of `step` and puts the session back to `running`,
/// in one transaction (a rare path: clarity over round trips).
pub(super) async fn decide_approval(
    pool: &PgPool,
    decision: &ApprovalDecision,
) -> StoreResult<Approved> {
    let id = decision.session_id;
    let reason = pg_safe::opt_text(decision.reason.as_deref());
    let mut tx = pool.begin().await?;
    let row = sqlx::query!(
        r#"SELECT org_id, status, next_step,
                COALESCE(approval_expires_at < now(), false) AS "expired!"
         FROM sessions WHERE id = $1 FOR UPDATE"#,
        id,
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row.filter(|r| r.org_id == decision.by.org_id) else {
        return Ok(Approved::Outcome(ApprovalOutcome::NotFound));
    };
    let step = decision.step;
    if row.status != SessionStatus::AwaitingApproval.as_str() {
        return Ok(Approved::Outcome(ApprovalOutcome::Conflict(format!(
            "the session is {}, not awaiting approval",
            row.status
        ))));
    }
    if row.next_step != step as i32 {
        return Ok(Approved::Outcome(ApprovalOutcome::Conflict(format!(
            "step {step} is not awaiting approval; step {} is",
            row.next_step
        ))));
    }
    if row.expired {
        tx.rollback().await?;
        return match super::reconcile::expire_one(pool, id).await? {
            Some(head) => Ok(Approved::Expired(head)),
            None => Ok(Approved::Outcome(ApprovalOutcome::Expired)),
        };
    }
    let decided_at = sqlx::query_scalar!(
        "UPDATE steps SET approval = $3, approval_reason = $4, approved_by = $5, approved_at = now()
         WHERE session_id = $1 AND step_index = $2 AND approval IS NULL
         RETURNING approved_at AS \"approved_at!\"",
        id,
        step as i32,
        if decision.approved {
            "approved"
        } else {
            "rejected"
        },
        reason.as_deref(),
        decision.by.key_id,
    )
    .fetch_optional(&mut *tx)
    .await?;
    let head = sqlx::query_as!(
        HeadRow,
        "UPDATE sessions SET status = 'running', approval_expires_at = NULL,
             version = version + 1, updated_at = now()
         WHERE id = $1
         RETURNING id, status, next_step, final_answer, error_code, error_message,
                   cancel_requested, version, approval_expires_at, updated_at",
        id,
    )
    .fetch_one(&mut *tx)
    .await?
    .head()?;
    tx.commit().await?;
    Ok(Approved::Recorded {
        head,
        approval: StepApproval {
            approved: decision.approved,
            reason: reason.map(|r| r.into_owned()),
            decided_by: Some(decision.by.key_id),
            decided_at: decided_at.unwrap_or_else(chrono::Utc::now),
        },
    })
}
