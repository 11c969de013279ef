//! The API's statements: create a session (with its `Idempotency-Key`, one statement), read a
//! whole session (one statement), cancel, decide an approval.

use sqlx::PgPool;
use sqlx::types::Json;
use uuid::Uuid;

use super::super::durable::{Approved, Cancelled};
use super::super::error::{StoreError, StoreResult};
use super::super::model::{
    ApprovalDecision, ApprovalOutcome, Created, ListQuery, NewSession, Promoted, SessionState,
    StepRecord, Window,
};
use super::super::storable;
use super::encode;
use super::rows::{HeadRow, SessionRow, SpendRow, state, status};
use crate::schemas::{
    EventKind, IfBusy, SessionEvent, SessionStatus, SessionSummary, StepApproval, ValidatedRun,
};

/// Inserts the session, claiming its idempotency key, in one call (`agentq_create_session`,
/// which counts the org's active sessions under a lock on the org when the session has a cap).
/// `None` when the key was already claimed (the session is then not created).
pub(super) async fn create(pool: &PgPool, new: &NewSession) -> StoreResult<Option<Created>> {
    let request = storable::to_json(&new.run).map_err(encode)?;
    let model = storable::text(&new.run.model);
    let (key, hash) = match &new.idempotency {
        Some(k) => (Some(k.key.as_str()), Some(k.request_hash.as_str())),
        None => (None, None),
    };
    let max_active = new.max_active.map(|n| n.min(i32::MAX as u32) as i32);
    let status = sqlx::query_scalar!(
        r#"SELECT agentq_create_session($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"#,
        new.id,
        new.org_id,
        model.as_ref(),
        Json(request) as _,
        new.run.max_steps as i32,
        new.deadline_at,
        key,
        hash,
        new.created_at,
        new.traceparent,
        max_active,
        new.run.if_busy == IfBusy::Queue,
    )
    .fetch_one(pool)
    .await?;
    Ok(match status.as_deref() {
        None => None,
        Some("busy") => Some(Created::Busy),
        Some("queued") => Some(Created::Queued),
        Some(_) => Some(Created::New),
    })
}

/// Starts queued sessions whose org has a free slot (`agentq_promote_queued`).
pub(super) async fn promote_queued(
    pool: &PgPool,
    org: Option<Uuid>,
    limit: i64,
) -> StoreResult<Vec<Promoted>> {
    let rows = sqlx::query!(
        r#"SELECT id AS "id!", status AS "status!", next_step AS "next_step!", final_answer,
                  error_code, error_message, cancel_requested AS "cancel_requested!",
                  version AS "version!", approval_expires_at, updated_at AS "updated_at!",
                  org_id AS "org_id!", traceparent
           FROM agentq_promote_queued($1, $2)"#,
        org,
        limit.clamp(0, i64::from(i32::MAX)) as i32,
    )
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|r| {
            let head = HeadRow {
                id: r.id,
                status: r.status,
                next_step: r.next_step,
                final_answer: r.final_answer,
                error_code: r.error_code,
                error_message: r.error_message,
                cancel_requested: r.cancel_requested,
                version: r.version,
                approval_expires_at: r.approval_expires_at,
                updated_at: r.updated_at,
            }
            .head()?;
            Ok(Promoted {
                head,
                org_id: r.org_id,
                traceparent: r.traceparent,
            })
        })
        .collect()
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
                 AND status IN ('queued', 'pending', 'running', 'awaiting_approval')
               FOR UPDATE)
           , head AS (
               UPDATE sessions s SET cancel_requested = true,
                   status = CASE WHEN t.idle THEN 'cancelled' ELSE s.status END,
                   fence = CASE WHEN t.idle THEN s.fence + 1 ELSE s.fence END,
                   lease_owner = CASE WHEN t.idle THEN NULL ELSE s.lease_owner END,
                   lease_until = CASE WHEN t.idle THEN NULL ELSE s.lease_until END,
                   approval_expires_at = CASE WHEN t.idle THEN NULL ELSE s.approval_expires_at END,
                   event_seq = s.event_seq + CASE WHEN t.idle THEN 2 ELSE 0 END,
                   version = s.version + 1, updated_at = now()
               FROM target t WHERE s.id = t.id
               RETURNING s.id, s.status, s.next_step, s.final_answer, s.error_code,
                         s.error_message, s.cancel_requested, s.version, s.approval_expires_at,
                         s.updated_at, s.event_seq
           ), ended AS (
               INSERT INTO session_events (session_id, seq, kind, data)
               SELECT id, event_seq - 1, 'status', '{"status": "cancelled", "error": null}'::jsonb
               FROM head WHERE status = 'cancelled'
               UNION ALL
               SELECT id, event_seq, 'done', jsonb_build_object('status', 'cancelled',
                   'final_answer', NULL, 'error', NULL, 'totals', agentq_totals_json(id))
               FROM head WHERE status = 'cancelled'
           )
           SELECT id AS "id!", status AS "status!", next_step AS "next_step!", final_answer,
                  error_code, error_message, cancel_requested AS "cancel_requested!",
                  version AS "version!", approval_expires_at, updated_at AS "updated_at!"
           FROM head"#,
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
    let reason = storable::opt_text(decision.reason.as_deref());
    let mut tx = pool.begin().await?;
    let row = sqlx::query!(
        r#"SELECT org_id, status, next_step,
                COALESCE(approval_expires_at < now(), false) AS "expired!",
                COALESCE(request->>'on_approval_timeout', 'fail') AS "on_timeout!"
         FROM sessions WHERE id = $1 FOR UPDATE"#,
        id,
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row.filter(|r| r.org_id == decision.org_id) else {
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
    match decision.window(row.expired, &row.on_timeout) {
        Window::Take => {}
        Window::Refuse(outcome) => return Ok(Approved::Outcome(outcome)),
        Window::Expire => {
            tx.rollback().await?;
            return match super::reconcile::expire_one(pool, id).await? {
                Some(head) => Ok(Approved::Expired(head)),
                None => Ok(Approved::Outcome(ApprovalOutcome::Expired)),
            };
        }
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
        decision.decided_by,
    )
    .fetch_optional(&mut *tx)
    .await?;
    let approval = StepApproval {
        approved: decision.approved,
        reason: reason.map(|r| r.into_owned()),
        decided_by: decision.decided_by,
        decided_at: decided_at.unwrap_or_else(chrono::Utc::now),
    };
    let event = serde_json::json!({"state": "decided", "step": step, "approved": approval.approved,
        "reason": approval.reason, "decided_by": approval.decided_by,
        "decided_at": approval.decided_at});
    let row = sqlx::query!(
        r#"WITH head AS (
               UPDATE sessions SET status = 'running', approval_expires_at = NULL,
                   event_seq = event_seq + 2, version = version + 1, updated_at = now()
               WHERE id = $1
               RETURNING id, status, next_step, final_answer, error_code, error_message,
                         cancel_requested, version, approval_expires_at, updated_at, event_seq,
                         traceparent
           ), events AS (
               INSERT INTO session_events (session_id, seq, kind, data)
               SELECT id, event_seq - 1, 'approval', $2::jsonb FROM head
               UNION ALL
               SELECT id, event_seq, 'status', '{"status": "running", "error": null}'::jsonb FROM head
           )
           SELECT id AS "id!", status AS "status!", next_step AS "next_step!", final_answer,
                  error_code, error_message, cancel_requested AS "cancel_requested!",
                  version AS "version!", approval_expires_at, updated_at AS "updated_at!",
                  traceparent
           FROM head"#,
        id,
        event,
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    let head = HeadRow {
        id: row.id,
        status: row.status,
        next_step: row.next_step,
        final_answer: row.final_answer,
        error_code: row.error_code,
        error_message: row.error_message,
        cancel_requested: row.cancel_requested,
        version: row.version,
        approval_expires_at: row.approval_expires_at,
        updated_at: row.updated_at,
    }
    .head()?;
    Ok(Approved::Recorded {
        head,
        approval,
        traceparent: row.traceparent,
    })
}

/// A session's events after `after`, in order.
pub(super) async fn events(
    pool: &PgPool,
    id: Uuid,
    after: i64,
    limit: i64,
) -> StoreResult<Vec<SessionEvent>> {
    let rows = sqlx::query!(
        r#"SELECT seq, kind, data AS "data: Json<serde_json::Value>", created_at
           FROM session_events WHERE session_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"#,
        id,
        after,
        limit,
    )
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|row| {
            Ok(SessionEvent {
                seq: row.seq,
                kind: EventKind::parse(&row.kind)
                    .ok_or_else(|| StoreError::Backend(format!("unknown event {:?}", row.kind)))?,
                data: row.data.0,
                created_at: row.created_at,
            })
        })
        .collect()
}

/// An org's sessions, newest first, by keyset (creation time, then id), with each one's step
/// count and cost.
pub(super) async fn list(pool: &PgPool, query: &ListQuery) -> StoreResult<Vec<SessionSummary>> {
    let (after_at, after_id) = query.after.unzip();
    let rows = sqlx::query!(
        r#"SELECT s.id, s.status, s.model, s.error_code, s.error_message, s.created_at,
                  s.updated_at,
                  (SELECT count(*) FROM steps st WHERE st.session_id = s.id) AS "steps!",
                  (SELECT CASE WHEN bool_or(c.cost_usd IS NULL) THEN NULL
                               ELSE trim_scale(coalesce(sum(c.cost_usd), 0))::text END
                   FROM llm_calls c WHERE c.session_id = s.id) AS cost_usd
           FROM sessions s
           WHERE s.org_id = $1 AND ($2::text IS NULL OR s.status = $2)
             AND ($3::timestamptz IS NULL OR (s.created_at, s.id) < ($3, $4::uuid))
           ORDER BY s.created_at DESC, s.id DESC
           LIMIT $5"#,
        query.org_id,
        query.status.map(|s| s.as_str()),
        after_at,
        after_id,
        i64::from(query.limit),
    )
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|row| {
            Ok(SessionSummary {
                session_id: row.id,
                status: status(&row.status)?,
                model: row.model,
                steps: row.steps.max(0) as u32,
                cost_usd: row
                    .cost_usd
                    .map(|c| c.parse())
                    .transpose()
                    .map_err(|e| StoreError::Backend(format!("unreadable cost: {e}")))?,
                error: super::rows::error(row.error_code, row.error_message),
                created_at: row.created_at,
                updated_at: row.updated_at,
            })
        })
        .collect()
}
