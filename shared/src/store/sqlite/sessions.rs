//! The API's operations on SQLite: keys, creating a session (with its `Idempotency-Key`),
//! cancelling, deciding an approval, the ledger, a session's events and an org's listing.

use rust_decimal::Decimal;
use serde_json::json;
use sqlx::AssertSqlSafe;
use sqlx::{Row, SqliteConnection, SqlitePool};
use uuid::Uuid;

use super::super::durable::{Approved, Cancelled};
use super::super::error::{StoreError, StoreResult};
use super::super::model::{
    ApprovalDecision, ApprovalOutcome, Created, Ending, ListQuery, LlmCallRecord, NewSession,
    Principal, Spend,
};
use super::rows::{self, HEAD, append_events, head, status};
use super::{encode, now, steps, time};
use crate::schemas::{EventKind, SessionEvent, SessionStatus, SessionSummary, StepApproval};

pub(super) async fn principal(pool: &SqlitePool, key_hash: &str) -> StoreResult<Option<Principal>> {
    let row =
        sqlx::query("SELECT org_id, id FROM api_keys WHERE key_hash = ?1 AND revoked_at IS NULL")
            .bind(key_hash)
            .fetch_optional(pool)
            .await?;
    row.map(|r| {
        Ok(Principal {
            org_id: r.try_get("org_id")?,
            key_id: r.try_get("id")?,
        })
    })
    .transpose()
}

pub(super) async fn create_api_key(
    conn: &mut SqliteConnection,
    org: &str,
    key_hash: &str,
    key_prefix: &str,
) -> StoreResult<Principal> {
    let at = now();
    let org_id: Uuid = sqlx::query_scalar(
        "INSERT INTO orgs (id, name, created_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (name) DO UPDATE SET name = excluded.name RETURNING id",
    )
    .bind(Uuid::now_v7())
    .bind(org)
    .bind(at)
    .fetch_one(&mut *conn)
    .await?;
    let key_id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO api_keys (id, org_id, key_hash, key_prefix, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .bind(key_id)
    .bind(org_id)
    .bind(key_hash)
    .bind(key_prefix)
    .bind(at)
    .execute(&mut *conn)
    .await?;
    Ok(Principal { org_id, key_id })
}

/// Inserts the session with its first event, claiming its idempotency key first: a key already
/// claimed gives the session it made (same request) or `KeyReused` (another request).
pub(super) async fn create(conn: &mut SqliteConnection, new: &NewSession) -> StoreResult<Created> {
    if let Some(key) = &new.idempotency {
        let first = sqlx::query(
            "SELECT request_hash, session_id FROM idempotency_keys WHERE org_id = ?1 AND key = ?2",
        )
        .bind(new.org_id)
        .bind(&key.key)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(first) = first {
            let hash: String = first.try_get("request_hash")?;
            return Ok(if hash == key.request_hash {
                Created::Existing(first.try_get("session_id")?)
            } else {
                Created::KeyReused
            });
        }
    }
    let request = serde_json::to_string(&new.run).map_err(encode)?;
    let created_at = super::micros(new.created_at);
    sqlx::query(
        "INSERT INTO sessions (id, org_id, model, request, max_steps, deadline_at, created_at,
                               updated_at, event_seq, traceparent)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, 1, ?8)",
    )
    .bind(new.id)
    .bind(new.org_id)
    .bind(&new.run.model)
    .bind(request)
    .bind(i64::from(new.run.max_steps))
    .bind(super::micros(new.deadline_at))
    .bind(created_at)
    .bind(&new.traceparent)
    .execute(&mut *conn)
    .await?;
    if let Some(key) = &new.idempotency {
        sqlx::query(
            "INSERT INTO idempotency_keys (org_id, key, request_hash, session_id, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .bind(new.org_id)
        .bind(&key.key)
        .bind(&key.request_hash)
        .bind(new.id)
        .bind(created_at)
        .execute(&mut *conn)
        .await?;
    }
    let pending = json!({"status": "pending", "error": null});
    append_events(conn, new.id, 1, &[("status", &pending)], created_at).await?;
    Ok(Created::New)
}

/// Cancels an unfinished session of this org: at once when no worker holds it (awaiting
/// approval, or no live lease), bumping the fence so a worker whose lease ran out writes
/// nothing more; otherwise by the flag its worker checks.
pub(super) async fn cancel(
    conn: &mut SqliteConnection,
    id: Uuid,
    org_id: Uuid,
) -> StoreResult<Cancelled> {
    let at = now();
    let row = sqlx::query(
        "SELECT org_id, status, (status = 'awaiting_approval' OR lease_until IS NULL
                                 OR lease_until < ?2) AS idle
         FROM sessions WHERE id = ?1",
    )
    .bind(id)
    .bind(at)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row.filter(|r| r.try_get::<Uuid, _>("org_id").ok() == Some(org_id)) else {
        return Ok(Cancelled::NotFound);
    };
    let current = status(row.try_get("status")?)?;
    if current.is_terminal() {
        return Ok(Cancelled::AlreadyFinished(current));
    }
    if row.try_get::<bool, _>("idle")? {
        // The fence moves on, so a worker whose lease ran out writes nothing more.
        sqlx::query("UPDATE sessions SET cancel_requested = 1, fence = fence + 1 WHERE id = ?1")
            .bind(id)
            .execute(&mut *conn)
            .await?;
        let head = steps::finish(conn, id, None, &Ending::Cancelled, None).await?;
        return head
            .map(Cancelled::Changed)
            .ok_or(StoreError::Backend("the cancelled session vanished".into()));
    }
    let row = sqlx::query(AssertSqlSafe(format!(
        "UPDATE sessions SET cancel_requested = 1, version = version + 1, updated_at = ?2
         WHERE id = ?1 RETURNING {HEAD}"
    )))
    .bind(id)
    .bind(at)
    .fetch_one(&mut *conn)
    .await?;
    Ok(Cancelled::Changed(head(&row)?))
}

/// Records a human's decision on the calls of `step` and puts the session back to `running`.
pub(super) async fn decide_approval(
    conn: &mut SqliteConnection,
    decision: &ApprovalDecision,
) -> StoreResult<Approved> {
    let id = decision.session_id;
    let at = now();
    let row = sqlx::query(
        "SELECT org_id, status, next_step, coalesce(approval_expires_at < ?2, 0) AS expired
         FROM sessions WHERE id = ?1",
    )
    .bind(id)
    .bind(at)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row.filter(|r| r.try_get::<Uuid, _>("org_id").ok() == Some(decision.by.org_id))
    else {
        return Ok(Approved::Outcome(ApprovalOutcome::NotFound));
    };
    let step = decision.step;
    let current: String = row.try_get("status")?;
    if current != SessionStatus::AwaitingApproval.as_str() {
        return Ok(Approved::Outcome(ApprovalOutcome::Conflict(format!(
            "the session is {current}, not awaiting approval"
        ))));
    }
    let next_step: i64 = row.try_get("next_step")?;
    if next_step != i64::from(step) {
        return Ok(Approved::Outcome(ApprovalOutcome::Conflict(format!(
            "step {step} is not awaiting approval; step {next_step} is"
        ))));
    }
    if row.try_get::<bool, _>("expired")? {
        return match super::reconcile::expire_one(conn, id).await? {
            Some(head) => Ok(Approved::Expired(head)),
            None => Ok(Approved::Outcome(ApprovalOutcome::Expired)),
        };
    }
    let decided_at: Option<i64> = sqlx::query_scalar(
        "UPDATE steps SET approval = ?3, approval_reason = ?4, approved_by = ?5, approved_at = ?6
         WHERE session_id = ?1 AND step_index = ?2 AND approval IS NULL
         RETURNING approved_at",
    )
    .bind(id)
    .bind(i64::from(step))
    .bind(if decision.approved {
        "approved"
    } else {
        "rejected"
    })
    .bind(&decision.reason)
    .bind(decision.by.key_id)
    .bind(at)
    .fetch_optional(&mut *conn)
    .await?;
    let approval = StepApproval {
        approved: decision.approved,
        reason: decision.reason.clone(),
        decided_by: Some(decision.by.key_id),
        decided_at: time(decided_at.unwrap_or(at)),
    };
    let event = json!({"state": "decided", "step": step, "approved": approval.approved,
        "reason": approval.reason, "decided_by": approval.decided_by,
        "decided_at": approval.decided_at});
    let row = sqlx::query(AssertSqlSafe(format!(
        "UPDATE sessions SET status = 'running', approval_expires_at = NULL,
             event_seq = event_seq + 2, version = version + 1, updated_at = ?2
         WHERE id = ?1 RETURNING {HEAD}, event_seq, traceparent"
    )))
    .bind(id)
    .bind(at)
    .fetch_one(&mut *conn)
    .await?;
    let seq: i64 = row.try_get("event_seq")?;
    let traceparent: Option<String> = row.try_get("traceparent")?;
    let head = head(&row)?;
    let running = json!({"status": "running", "error": null});
    append_events(
        conn,
        id,
        seq - 1,
        &[("approval", &event), ("status", &running)],
        at,
    )
    .await?;
    Ok(Approved::Recorded {
        head,
        approval,
        traceparent,
    })
}

/// One LLM call into the ledger.
pub(super) async fn record_llm_call(
    conn: &mut SqliteConnection,
    call: &LlmCallRecord,
) -> StoreResult<Spend> {
    sqlx::query(
        "INSERT INTO llm_calls (session_id, step_index, model, outcome, http_status,
             input_tokens, output_tokens, cache_read_tokens, cache_write_tokens,
             cache_write_1h_tokens, cost_usd, duration_ms, error, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )
    .bind(call.session_id)
    .bind(i64::from(call.step_index))
    .bind(&call.model)
    .bind(if call.ok { "ok" } else { "error" })
    .bind(call.http_status.map(i64::from))
    .bind(call.usage.input_tokens as i64)
    .bind(call.usage.output_tokens as i64)
    .bind(call.usage.cache_read_tokens as i64)
    .bind(call.usage.cache_write_tokens as i64)
    .bind(call.usage.cache_write_1h_tokens as i64)
    .bind(call.cost_usd.map(|c: Decimal| c.to_string()))
    .bind(call.duration_ms as i64)
    .bind(&call.error)
    .bind(now())
    .execute(&mut *conn)
    .await?;
    Ok(Spend::of(call))
}

/// A session's events after `after`, in order.
pub(super) async fn events(
    pool: &SqlitePool,
    id: Uuid,
    after: i64,
    limit: i64,
) -> StoreResult<Vec<SessionEvent>> {
    let rows = sqlx::query(
        "SELECT seq, kind, data, created_at FROM session_events
         WHERE session_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
    )
    .bind(id)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            let kind: String = row.try_get("kind")?;
            let data: String = row.try_get("data")?;
            Ok(SessionEvent {
                seq: row.try_get("seq")?,
                kind: EventKind::parse(&kind)
                    .ok_or_else(|| StoreError::Backend(format!("unknown event {kind:?}")))?,
                data: serde_json::from_str(&data)
                    .map_err(|e| StoreError::Backend(format!("unreadable event: {e}")))?,
                created_at: time(row.try_get("created_at")?),
            })
        })
        .collect()
}

/// An org's sessions, newest first, by keyset (creation time, then id), with each one's step
/// count and cost.
pub(super) async fn list(pool: &SqlitePool, query: &ListQuery) -> StoreResult<Vec<SessionSummary>> {
    let (after_at, after_id) = query.after.unzip();
    let rows = sqlx::query(
        "SELECT s.id, s.status, s.model, s.error_code, s.error_message, s.created_at,
                s.updated_at, (SELECT count(*) FROM steps st WHERE st.session_id = s.id) AS steps
         FROM sessions s
         WHERE s.org_id = ?1 AND (?2 IS NULL OR s.status = ?2)
           AND (?3 IS NULL OR s.created_at < ?3 OR (s.created_at = ?3 AND s.id < ?4))
         ORDER BY s.created_at DESC, s.id DESC
         LIMIT ?5",
    )
    .bind(query.org_id)
    .bind(query.status.map(|s| s.as_str()))
    .bind(after_at.map(super::micros))
    .bind(after_id)
    .bind(i64::from(query.limit))
    .fetch_all(pool)
    .await?;
    let mut sessions = Vec::with_capacity(rows.len());
    let mut conn = pool.acquire().await?;
    for row in rows {
        let id: Uuid = row.try_get("id")?;
        let mut total = Spend::zero();
        for (_, spend) in rows::spend(&mut conn, id).await? {
            total.add(&spend);
        }
        sessions.push(SessionSummary {
            session_id: id,
            status: status(row.try_get("status")?)?,
            model: row.try_get("model")?,
            steps: row.try_get::<i64, _>("steps")?.max(0) as u32,
            cost_usd: total.cost_usd.map(|c| c.normalize()),
            error: rows::error(row.try_get("error_code")?, row.try_get("error_message")?),
            created_at: time(row.try_get("created_at")?),
            updated_at: time(row.try_get("updated_at")?),
        });
    }
    Ok(sessions)
}
