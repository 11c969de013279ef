//! The API's operations on SQLite: keys, creating a session (with its `Idempotency-Key`),
//! cancelling, deciding an approval, the ledger, a session's events and an org's listing.

use agentq_sqlite::{rows as read, sessions as stmt};
use rust_decimal::Decimal;
use serde_json::json;
use sqlx::{SqliteConnection, SqlitePool};
use uuid::Uuid;

use super::super::durable::{Approved, Cancelled};
use super::super::error::{StoreError, StoreResult};
use super::super::model::{
    ActiveCap, ApprovalDecision, ApprovalOutcome, Created, Ending, KeyInfo, ListQuery,
    LlmCallRecord, NewKey, NewSession, Principal, Promoted, RateLimit, Spend, Window,
};
use super::super::storable;
use super::rows::{self, append_events, head, status};
use super::{encode, now, steps, time};
use crate::schemas::{
    EventKind, IfBusy, SessionEvent, SessionStatus, SessionSummary, StepApproval,
};

/// The owner of a live key, marking it used.
pub(super) async fn principal(
    conn: &mut SqliteConnection,
    key_hash: &str,
) -> StoreResult<Option<Principal>> {
    let Some(key) = stmt::use_key(&mut *conn, key_hash, now()).await? else {
        return Ok(None);
    };
    let org = stmt::org_limit(&mut *conn, key.org_id).await?;
    Ok(Some(Principal {
        org_id: key.org_id,
        key_id: key.id,
        rate_limit: RateLimit::from_columns(org.rate_limit_per_sec, org.rate_limit_burst),
        active_cap: ActiveCap::from_column(org.max_active_sessions),
        expires_at: key.expires_at.map(time),
    }))
}

/// The org's keys, oldest first; `None` when there is no such org.
pub(super) async fn keys(pool: &SqlitePool, org: &str) -> StoreResult<Option<Vec<KeyInfo>>> {
    let Some(org_id) = stmt::org_id(pool, org).await? else {
        return Ok(None);
    };
    let rows = stmt::keys_of(pool, org_id).await?;
    Ok(Some(
        rows.into_iter()
            .map(|k| KeyInfo {
                id: k.id,
                name: k.name,
                prefix: k.prefix,
                created_at: time(k.created_at),
                last_used_at: k.last_used_at.map(time),
                expires_at: k.expires_at.map(time),
                revoked_at: k.revoked_at.map(time),
            })
            .collect(),
    ))
}

/// Revokes the key, keeping the first revocation's time; false when there is no such key.
pub(super) async fn revoke_key(conn: &mut SqliteConnection, id: Uuid) -> StoreResult<bool> {
    Ok(stmt::revoke_key(&mut *conn, id, now()).await? > 0)
}

/// Sets (or with `None` clears) the org's own rate limit; false when there is no such org.
pub(super) async fn set_rate_limit(
    conn: &mut SqliteConnection,
    org: &str,
    limit: Option<RateLimit>,
) -> StoreResult<bool> {
    let (per_sec, burst) = match limit {
        Some(l) => (Some(i64::from(l.per_sec)), Some(i64::from(l.burst))),
        None => (None, None),
    };
    Ok(stmt::set_rate_limit(&mut *conn, org, per_sec, burst).await? > 0)
}

/// Sets (or with `None` clears) the org's own cap on active sessions; false when there is no
/// such org.
pub(super) async fn set_active_cap(
    conn: &mut SqliteConnection,
    org: &str,
    cap: Option<ActiveCap>,
) -> StoreResult<bool> {
    Ok(stmt::set_active_cap(&mut *conn, org, cap.map(ActiveCap::to_column)).await? > 0)
}

pub(super) async fn create_api_key(
    conn: &mut SqliteConnection,
    key: &NewKey,
    key_hash: &str,
    key_prefix: &str,
) -> StoreResult<Principal> {
    let at = now();
    let org = storable::text(&key.org);
    let org_id = stmt::upsert_org(&mut *conn, Uuid::now_v7(), &org, at).await?;
    let key_id = Uuid::now_v7();
    let name = storable::opt_text(key.name.as_deref());
    let row = stmt::NewKey {
        id: key_id,
        org_id,
        key_hash,
        key_prefix,
        name: name.as_deref(),
        expires_at: key.expires_at.map(super::micros),
        created_at: at,
    };
    stmt::insert_key(&mut *conn, &row).await?;
    Ok(Principal {
        org_id,
        key_id,
        rate_limit: None,
        active_cap: None,
        expires_at: key.expires_at,
    })
}

/// Inserts the session with its first event, claiming its idempotency key first: a key already
/// claimed gives the session it made (same request) or `KeyReused` (another request).
pub(super) async fn create(conn: &mut SqliteConnection, new: &NewSession) -> StoreResult<Created> {
    if let Some(key) = &new.idempotency
        && let Some(first) = stmt::idempotency_key(&mut *conn, new.org_id, &key.key).await?
    {
        return Ok(if first.request_hash == key.request_hash {
            Created::Existing(first.session_id)
        } else {
            Created::KeyReused
        });
    }
    // The transaction is the database's one writer, so the count below is exact until it
    // commits: the cap holds across processes on the file.
    let max_active = new.max_active.map(i64::from);
    let free = match max_active {
        Some(cap) => stmt::has_free_slot(&mut *conn, new.org_id, cap).await?,
        None => true,
    };
    if !free && new.run.if_busy == IfBusy::Reject {
        return Ok(Created::Busy);
    }
    let initial = if free {
        SessionStatus::Pending
    } else {
        SessionStatus::Queued
    };
    let request = storable::to_json(&new.run).map_err(encode)?.to_string();
    let model = storable::text(&new.run.model);
    let created_at = super::micros(new.created_at);
    let row = stmt::NewSession {
        id: new.id,
        org_id: new.org_id,
        status: initial.as_str(),
        max_active,
        model: &model,
        request: &request,
        max_steps: i64::from(new.run.max_steps),
        deadline_at: super::micros(new.deadline_at),
        created_at,
        traceparent: new.traceparent.as_deref(),
    };
    stmt::insert_session(&mut *conn, &row).await?;
    if let Some(key) = &new.idempotency {
        stmt::insert_idempotency_key(
            &mut *conn,
            new.org_id,
            &key.key,
            &key.request_hash,
            new.id,
            created_at,
        )
        .await?;
    }
    let event = json!({"status": initial.as_str(), "error": null});
    append_events(conn, new.id, 1, &[("status", &event)], created_at).await?;
    Ok(if free { Created::New } else { Created::Queued })
}

/// Starts queued sessions (of `org`, or of every org), oldest first, while their org has fewer
/// active sessions than the cap each was created under; at most `limit`.
pub(super) async fn promote_queued(
    conn: &mut SqliteConnection,
    org: Option<Uuid>,
    limit: i64,
) -> StoreResult<Vec<Promoted>> {
    let mut promoted = Vec::new();
    let started = json!({"status": "pending", "error": null});
    for org_id in stmt::orgs_with_queued(&mut *conn, org).await? {
        let mut active = stmt::active_count(&mut *conn, org_id).await?;
        for queued in stmt::queued_of(&mut *conn, org_id).await? {
            if promoted.len() as i64 >= limit || active >= queued.max_active.unwrap_or(i64::MAX) {
                break;
            }
            let at = now();
            let Some(row) = stmt::start_queued(&mut *conn, queued.id, at).await? else {
                continue;
            };
            let traceparent = row.traceparent;
            let (head, seq) = head(row.head)?;
            append_events(conn, head.id, seq, &[("status", &started)], at).await?;
            promoted.push(Promoted {
                head,
                org_id,
                traceparent,
            });
            active += 1;
        }
    }
    Ok(promoted)
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
    let target = stmt::cancel_target(&mut *conn, id, at).await?;
    let Some(target) = target.filter(|t| t.org_id == org_id) else {
        return Ok(Cancelled::NotFound);
    };
    let current = status(&target.status)?;
    if current.is_terminal() {
        return Ok(Cancelled::AlreadyFinished(current));
    }
    if target.idle {
        // The fence moves on, so a worker whose lease ran out writes nothing more.
        stmt::fence_cancelled(&mut *conn, id).await?;
        let head = steps::finish(conn, id, None, &Ending::Cancelled, None).await?;
        return head
            .map(Cancelled::Changed)
            .ok_or(StoreError::Backend("the cancelled session vanished".into()));
    }
    let (head, _) = head(stmt::flag_cancel(&mut *conn, id, at).await?)?;
    Ok(Cancelled::Changed(head))
}

/// Records a human's decision on the calls of `step` and puts the session back to `running`.
pub(super) async fn decide_approval(
    conn: &mut SqliteConnection,
    decision: &ApprovalDecision,
) -> StoreResult<Approved> {
    let id = decision.session_id;
    let at = now();
    let target = stmt::approval_target(&mut *conn, id, at).await?;
    let Some(target) = target.filter(|t| t.org_id == decision.org_id) else {
        return Ok(Approved::Outcome(ApprovalOutcome::NotFound));
    };
    let step = decision.step;
    let current = target.status;
    if current != SessionStatus::AwaitingApproval.as_str() {
        return Ok(Approved::Outcome(ApprovalOutcome::Conflict(format!(
            "the session is {current}, not awaiting approval"
        ))));
    }
    let next_step = target.next_step;
    if next_step != i64::from(step) {
        return Ok(Approved::Outcome(ApprovalOutcome::Conflict(format!(
            "step {step} is not awaiting approval; step {next_step} is"
        ))));
    }
    match decision.window(target.expired, &target.on_timeout) {
        Window::Take => {}
        Window::Refuse(outcome) => return Ok(Approved::Outcome(outcome)),
        Window::Expire => {
            return match super::reconcile::expire_one(conn, id).await? {
                Some(head) => Ok(Approved::Expired(head)),
                None => Ok(Approved::Outcome(ApprovalOutcome::Expired)),
            };
        }
    }
    let reason = storable::opt_text(decision.reason.as_deref()).map(|r| r.into_owned());
    let decided_at = stmt::decide_step(
        &mut *conn,
        id,
        i64::from(step),
        if decision.approved {
            "approved"
        } else {
            "rejected"
        },
        reason.as_deref(),
        decision.decided_by,
        at,
    )
    .await?;
    let approval = StepApproval {
        approved: decision.approved,
        reason,
        decided_by: decision.decided_by,
        decided_at: time(decided_at.unwrap_or(at)),
    };
    let event = json!({"state": "decided", "step": step, "approved": approval.approved,
        "reason": approval.reason, "decided_by": approval.decided_by,
        "decided_at": approval.decided_at});
    let resumed = stmt::resume(&mut *conn, id, at).await?;
    let (head, seq) = head(resumed.head)?;
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
        traceparent: resumed.traceparent,
    })
}

/// One LLM call into the ledger.
pub(super) async fn record_llm_call(
    conn: &mut SqliteConnection,
    call: &LlmCallRecord,
) -> StoreResult<Spend> {
    let cost = call.cost_usd.map(|c: Decimal| c.to_string());
    let (model, error) = (
        storable::text(&call.model),
        storable::opt_text(call.error.as_deref()),
    );
    let row = stmt::LlmCall {
        session_id: call.session_id,
        step_index: i64::from(call.step_index),
        model: &model,
        outcome: if call.ok { "ok" } else { "error" },
        http_status: call.http_status.map(i64::from),
        input_tokens: call.usage.input_tokens as i64,
        output_tokens: call.usage.output_tokens as i64,
        cache_read_tokens: call.usage.cache_read_tokens as i64,
        cache_write_tokens: call.usage.cache_write_tokens as i64,
        cache_write_1h_tokens: call.usage.cache_write_1h_tokens as i64,
        cost_usd: cost.as_deref(),
        duration_ms: call.duration_ms as i64,
        error: error.as_deref(),
        created_at: now(),
    };
    stmt::insert_llm_call(&mut *conn, &row).await?;
    Ok(Spend::of(call))
}

/// A session's events after `after`, in order.
pub(super) async fn events(
    pool: &SqlitePool,
    id: Uuid,
    after: i64,
    limit: i64,
) -> StoreResult<Vec<SessionEvent>> {
    read::events(pool, id, after, limit)
        .await?
        .into_iter()
        .map(|row| {
            Ok(SessionEvent {
                seq: row.seq,
                kind: EventKind::parse(&row.kind)
                    .ok_or_else(|| StoreError::Backend(format!("unknown event {:?}", row.kind)))?,
                data: serde_json::from_str(&row.data)
                    .map_err(|e| StoreError::Backend(format!("unreadable event: {e}")))?,
                created_at: time(row.created_at),
            })
        })
        .collect()
}

/// An org's sessions, newest first, by keyset (creation time, then id), with each one's step
/// count and cost.
pub(super) async fn list(pool: &SqlitePool, query: &ListQuery) -> StoreResult<Vec<SessionSummary>> {
    let after = query.after.map(|(at, id)| stmt::After {
        created_at: super::micros(at),
        id,
    });
    let status_filter = query.status.map(|s| s.as_str());
    let limit = i64::from(query.limit);
    let rows = stmt::list(pool, query.org_id, status_filter, after, limit).await?;
    let mut sessions = Vec::with_capacity(rows.len());
    let mut conn = pool.acquire().await?;
    for row in rows {
        let mut total = Spend::zero();
        for (_, spend) in rows::spend(&mut conn, row.id).await? {
            total.add(&spend);
        }
        sessions.push(SessionSummary {
            session_id: row.id,
            status: status(&row.status)?,
            model: row.model,
            steps: row.steps.max(0) as u32,
            cost_usd: total.cost_usd.map(|c| c.normalize()),
            error: rows::error(row.error_code, row.error_message),
            created_at: time(row.created_at),
            updated_at: time(row.updated_at),
        });
    }
    Ok(sessions)
}
