//! The step protocol's operations on SQLite. Each runs in the write transaction `mod.rs` opens
//! and checks the lease's fence, so a worker that lost the lease changes nothing; each returns
//! the session's fields after it, so the worker's copy (and the hot copy written from it) stays
//! exact. The same effects, in the same order, as `../postgres/steps.rs`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::AssertSqlSafe;
use sqlx::{Row, SqliteConnection, SqlitePool};
use uuid::Uuid;

use super::super::durable::{Announced, DecisionStored};
use super::super::error::{StoreError, StoreResult};
use super::super::model::{Begin, Decision, Ending, Head, Lease, LlmCallRecord, Spend, StepRun};
use super::rows::{self, HEAD, append_events, done_event, head, status, status_event};
use super::{encode, micros, now, sessions};
use crate::schemas::SessionStatus;

fn ttl_micros(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX / 2)
}

/// Takes the lease on the session for step `step` (if it is the current step, unfinished, and
/// no one holds a live lease), marks a pending session running, and reads the whole session.
pub(super) async fn begin(
    conn: &mut SqliteConnection,
    id: Uuid,
    step: u32,
    owner: &str,
    ttl: Duration,
) -> StoreResult<Begin> {
    let at = now();
    let taken = sqlx::query(
        "UPDATE sessions
         SET lease_owner = ?2, lease_until = ?3 + ?4, fence = fence + 1,
             step_attempts = step_attempts + 1,
             version = version + (status = 'pending'),
             event_seq = event_seq + (status = 'pending'),
             updated_at = CASE WHEN status = 'pending' THEN ?3 ELSE updated_at END,
             status = 'running'
         WHERE id = ?1 AND next_step = ?5 AND status IN ('pending', 'running')
           AND (lease_until IS NULL OR lease_until < ?3)
         RETURNING fence, step_attempts, event_seq, (updated_at = ?3) AS became",
    )
    .bind(id)
    .bind(owner)
    .bind(at)
    .bind(ttl_micros(ttl))
    .bind(i64::from(step))
    .fetch_optional(&mut *conn)
    .await?;
    let Some(taken) = taken else {
        return why_not(conn, id, step).await;
    };
    let fence: i64 = taken.try_get("fence")?;
    let attempts: i64 = taken.try_get("step_attempts")?;
    let event_seq: i64 = taken.try_get("event_seq")?;
    let state = rows::load(conn, id)
        .await?
        .ok_or(StoreError::NotFound("session"))?;
    // Only a pending session's `updated_at` moves to this statement's time.
    let became_running: bool = taken.try_get("became")?;
    if became_running {
        let running = json!({"status": "running", "error": null});
        append_events(conn, id, event_seq, &[("status", &running)], at).await?;
    }
    Ok(Begin::Leased(Box::new(StepRun {
        lease: Lease {
            session_id: id,
            owner: owner.to_owned(),
            fence,
            attempt: attempts.max(0) as u32,
        },
        step,
        state,
        became_running,
        traceparent: None,
    })))
}

/// Why the lease was not taken.
async fn why_not(conn: &mut SqliteConnection, id: Uuid, step: u32) -> StoreResult<Begin> {
    let row = sqlx::query(
        "SELECT status, next_step, (lease_until IS NOT NULL AND lease_until >= ?2) AS held
         FROM sessions WHERE id = ?1",
    )
    .bind(id)
    .bind(now())
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else {
        return Ok(Begin::Missing);
    };
    let current = status(row.try_get("status")?)?;
    let next_step: i64 = row.try_get("next_step")?;
    Ok(
        if current.is_terminal() || current == SessionStatus::AwaitingApproval {
            Begin::Idle(current)
        } else if next_step != i64::from(step) {
            Begin::NotCurrent {
                next_step: next_step.max(0) as u32,
            }
        } else {
            Begin::Held
        },
    )
}

/// Whether the lease is still held (its fence is the session's).
async fn holds(conn: &mut SqliteConnection, lease: &Lease) -> StoreResult<bool> {
    let fence: Option<i64> = sqlx::query_scalar("SELECT fence FROM sessions WHERE id = ?1")
        .bind(lease.session_id)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(fence == Some(lease.fence))
}

/// The status, answer and error columns an ending sets.
fn ending_columns(
    ending: &Ending,
) -> (
    &'static str,
    Option<&str>,
    Option<&'static str>,
    Option<&str>,
) {
    match ending {
        Ending::Completed { final_answer } => ("completed", Some(final_answer), None, None),
        Ending::Failed { code, message } => ("failed", None, Some(code.as_str()), Some(message)),
        Ending::Cancelled => ("cancelled", None, None, None),
    }
}

/// Stores the decision unless one is stored, with the ledger row of the call that made it, and
/// ends the session when `ending` is given (a final answer completes it, unless a cancel came
/// first).
pub(super) async fn record_decision(
    conn: &mut SqliteConnection,
    lease: &Lease,
    step: u32,
    call: Option<&LlmCallRecord>,
    decision: &Decision,
    ending: Option<&Ending>,
    events: &Announced,
) -> StoreResult<DecisionStored> {
    let id = lease.session_id;
    let at = now();
    let fenced: Option<i64> = sqlx::query_scalar(
        "SELECT 1 FROM sessions WHERE id = ?1 AND fence = ?2 AND status IN ('pending', 'running')",
    )
    .bind(id)
    .bind(lease.fence)
    .fetch_optional(&mut *conn)
    .await?;
    if fenced.is_none() {
        return Err(StoreError::LeaseLost(id));
    }
    if let Some(call) = call {
        sessions::record_llm_call(conn, call).await?;
    }
    let actions = serde_json::to_string(&decision.actions).map_err(encode)?;
    sqlx::query(
        "INSERT INTO steps (session_id, step_index, thought, llm_content, actions, is_final,
                            final_answer, invalid_output, started_at, decided_at, finished_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT (session_id, step_index) DO NOTHING",
    )
    .bind(id)
    .bind(i64::from(step))
    .bind(&decision.thought)
    .bind(decision.llm_content.to_string())
    .bind(actions)
    .bind(decision.is_final)
    .bind(&decision.final_answer)
    .bind(&decision.invalid_output)
    .bind(micros(decision.started_at))
    .bind(at)
    .bind(decision.actions.is_empty().then_some(at))
    .execute(&mut *conn)
    .await?;
    let (end_status, end_answer, end_code, end_message) = match ending {
        Some(ending) => {
            let (s, a, c, m) = ending_columns(ending);
            (Some(s), a, c, m)
        }
        None => (None, None, None, None),
    };
    let row = sqlx::query(AssertSqlSafe(format!(
        "UPDATE sessions SET version = version + 1, updated_at = ?2,
             event_seq = event_seq + CASE WHEN ?3 IS NULL THEN 1 ELSE 3 END,
             status = CASE WHEN ?3 IS NULL THEN status
                           WHEN ?3 = 'completed' AND cancel_requested THEN 'cancelled'
                           ELSE ?3 END,
             final_answer = CASE WHEN ?3 IS NULL THEN final_answer
                                 WHEN ?3 = 'completed' AND cancel_requested THEN NULL
                                 ELSE ?4 END,
             error_code = CASE WHEN ?3 IS NULL THEN error_code ELSE ?5 END,
             error_message = CASE WHEN ?3 IS NULL THEN error_message ELSE ?6 END,
             lease_owner = CASE WHEN ?3 IS NULL THEN lease_owner END,
             lease_until = CASE WHEN ?3 IS NULL THEN lease_until END
         WHERE id = ?1 RETURNING {HEAD}, event_seq"
    )))
    .bind(id)
    .bind(at)
    .bind(end_status)
    .bind(end_answer)
    .bind(end_code)
    .bind(end_message)
    .fetch_one(&mut *conn)
    .await?;
    let seq: i64 = row.try_get("event_seq")?;
    let head = head(&row)?;
    if ending.is_some() {
        let totals = events.totals.clone().unwrap_or(Value::Null);
        let (status, done) = (status_event(&head), done_event(&head, totals));
        append_events(
            conn,
            id,
            seq - 2,
            &[("step", &events.step), ("status", &status), ("done", &done)],
            at,
        )
        .await?;
    } else {
        append_events(conn, id, seq, &[("step", &events.step)], at).await?;
    }
    let step = rows::read_step(conn, id, step)
        .await?
        .ok_or(StoreError::LeaseLost(id))?;
    Ok(DecisionStored {
        step,
        head,
        spend: call.map(Spend::of),
    })
}

/// Marks call `call` of the step as started; false if an earlier delivery already had.
pub(super) async fn mark_call_started(
    conn: &mut SqliteConnection,
    lease: &Lease,
    step: u32,
    call: usize,
) -> StoreResult<bool> {
    let updated = sqlx::query(
        "UPDATE steps SET calls_started = ?3 + 1, tool_started_at = coalesce(tool_started_at, ?5)
         WHERE session_id = ?1 AND step_index = ?2 AND calls_started <= ?3
           AND EXISTS (SELECT 1 FROM sessions WHERE id = ?1 AND fence = ?4)",
    )
    .bind(lease.session_id)
    .bind(i64::from(step))
    .bind(call as i64)
    .bind(lease.fence)
    .bind(now())
    .execute(&mut *conn)
    .await?;
    if updated.rows_affected() == 1 {
        return Ok(true);
    }
    if !holds(conn, lease).await? {
        return Err(StoreError::LeaseLost(lease.session_id));
    }
    Ok(false)
}

/// Stores the result of call `call` unless one is stored; with `advance`, also moves the
/// session to the next step and releases the lease.
pub(super) async fn record_observation(
    conn: &mut SqliteConnection,
    lease: &Lease,
    step: u32,
    call: usize,
    observation: &Value,
    advance: bool,
    event: &Value,
) -> StoreResult<Head> {
    let (id, at) = (lease.session_id, now());
    sqlx::query(
        "UPDATE steps SET observations = json_insert(observations, '$[#]', json(?4)),
             finished_at = CASE WHEN json_array_length(observations) + 1
                                     >= json_array_length(actions) THEN ?6 END
         WHERE session_id = ?1 AND step_index = ?2 AND json_array_length(observations) = ?3
           AND EXISTS (SELECT 1 FROM sessions WHERE id = ?1 AND fence = ?5)",
    )
    .bind(id)
    .bind(i64::from(step))
    .bind(call as i64)
    .bind(observation.to_string())
    .bind(lease.fence)
    .bind(at)
    .execute(&mut *conn)
    .await?;
    let row = sqlx::query(AssertSqlSafe(format!(
        "UPDATE sessions SET version = version + 1, updated_at = ?4, event_seq = event_seq + 1,
             next_step = CASE WHEN ?5 THEN next_step + 1 ELSE next_step END,
             step_attempts = CASE WHEN ?5 THEN 0 ELSE step_attempts END,
             lease_owner = CASE WHEN ?5 THEN NULL ELSE lease_owner END,
             lease_until = CASE WHEN ?5 THEN NULL ELSE lease_until END
         WHERE id = ?1 AND fence = ?2 AND next_step = ?3 AND status IN ('pending', 'running')
         RETURNING {HEAD}, event_seq"
    )))
    .bind(id)
    .bind(lease.fence)
    .bind(i64::from(step))
    .bind(at)
    .bind(advance)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else {
        return Err(StoreError::LeaseLost(id));
    };
    let seq: i64 = row.try_get("event_seq")?;
    append_events(conn, id, seq, &[("step", event)], at).await?;
    head(&row)
}

/// Moves the session from `step` to the next one and releases the lease.
pub(super) async fn advance(
    conn: &mut SqliteConnection,
    lease: &Lease,
    step: u32,
) -> StoreResult<Head> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "UPDATE sessions SET next_step = ?2 + 1, lease_owner = NULL, lease_until = NULL,
             step_attempts = 0, version = version + 1, updated_at = ?4
         WHERE id = ?1 AND next_step = ?2 AND fence = ?3 AND status IN ('pending', 'running')
         RETURNING {HEAD}"
    )))
    .bind(lease.session_id)
    .bind(i64::from(step))
    .bind(lease.fence)
    .bind(now())
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref()
        .map(head)
        .transpose()?
        .ok_or(StoreError::LeaseLost(lease.session_id))
}

/// The step waits for a human until `expires_at`, without the lease.
pub(super) async fn await_approval(
    conn: &mut SqliteConnection,
    lease: &Lease,
    step: u32,
    expires_at: DateTime<Utc>,
    reviews: &Value,
    event: &Value,
) -> StoreResult<Head> {
    let (id, at) = (lease.session_id, now());
    let reviewed = sqlx::query(
        "UPDATE steps SET approval_details = ?3
         WHERE session_id = ?1 AND step_index = ?2
           AND EXISTS (SELECT 1 FROM sessions WHERE id = ?1 AND fence = ?4
                       AND status IN ('pending', 'running'))",
    )
    .bind(id)
    .bind(i64::from(step))
    .bind(reviews.to_string())
    .bind(lease.fence)
    .execute(&mut *conn)
    .await?;
    if reviewed.rows_affected() == 0 {
        return Err(StoreError::LeaseLost(id));
    }
    let row = sqlx::query(AssertSqlSafe(format!(
        "UPDATE sessions SET status = 'awaiting_approval', approval_expires_at = ?3,
             lease_owner = NULL, lease_until = NULL, step_attempts = 0,
             event_seq = event_seq + 2, version = version + 1, updated_at = ?4
         WHERE id = ?1 AND fence = ?2 RETURNING {HEAD}, event_seq"
    )))
    .bind(id)
    .bind(lease.fence)
    .bind(micros(expires_at))
    .bind(at)
    .fetch_one(&mut *conn)
    .await?;
    let seq: i64 = row.try_get("event_seq")?;
    let awaiting = json!({"status": "awaiting_approval", "error": null});
    append_events(
        conn,
        id,
        seq - 1,
        &[("status", &awaiting), ("approval", event)],
        at,
    )
    .await?;
    head(&row)
}

/// Ends an unfinished session (only at `fence`, when given), with its `status` and `done`
/// events; `None` when it had already ended or the fence moved on. `done` carries `totals`, or
/// the ledger's.
pub(super) async fn finish(
    conn: &mut SqliteConnection,
    id: Uuid,
    fence: Option<i64>,
    ending: &Ending,
    totals: Option<&Value>,
) -> StoreResult<Option<Head>> {
    let at = now();
    let (status, answer, code, message) = ending_columns(ending);
    let row = sqlx::query(AssertSqlSafe(format!(
        "UPDATE sessions SET
             status = CASE WHEN ?2 = 'completed' AND cancel_requested THEN 'cancelled' ELSE ?2 END,
             final_answer = CASE WHEN ?2 = 'completed' AND cancel_requested THEN NULL ELSE ?3 END,
             error_code = ?4, error_message = ?5,
             lease_owner = NULL, lease_until = NULL, approval_expires_at = NULL,
             event_seq = event_seq + 2, version = version + 1, updated_at = ?7
         WHERE id = ?1 AND (?6 IS NULL OR fence = ?6)
           AND status IN ('pending', 'running', 'awaiting_approval')
         RETURNING {HEAD}, event_seq"
    )))
    .bind(id)
    .bind(status)
    .bind(answer)
    .bind(code)
    .bind(message)
    .bind(fence)
    .bind(at)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let seq: i64 = row.try_get("event_seq")?;
    let head = head(&row)?;
    let totals = match totals {
        Some(totals) => totals.clone(),
        None => rows::totals(conn, id).await?,
    };
    let (status, done) = (status_event(&head), done_event(&head, totals));
    append_events(
        conn,
        id,
        seq - 1,
        &[("status", &status), ("done", &done)],
        at,
    )
    .await?;
    Ok(Some(head))
}

/// Ends an unfinished session; with a lease, only while it is held (else `LeaseLost`).
pub(super) async fn end(
    conn: &mut SqliteConnection,
    id: Uuid,
    lease: Option<&Lease>,
    ending: &Ending,
    totals: Option<&Value>,
) -> StoreResult<Option<Head>> {
    let ended = finish(conn, id, lease.map(|l| l.fence), ending, totals).await?;
    if ended.is_none()
        && let Some(lease) = lease
        && !holds(conn, lease).await?
    {
        return Err(StoreError::LeaseLost(id));
    }
    Ok(ended)
}

pub(super) async fn renew_lease(
    pool: &SqlitePool,
    lease: &Lease,
    ttl: Duration,
) -> StoreResult<bool> {
    let renewed = sqlx::query(
        "UPDATE sessions SET lease_until = ?3 + ?4
         WHERE id = ?1 AND fence = ?2 AND lease_owner = ?5",
    )
    .bind(lease.session_id)
    .bind(lease.fence)
    .bind(now())
    .bind(ttl_micros(ttl))
    .bind(&lease.owner)
    .execute(pool)
    .await?;
    Ok(renewed.rows_affected() == 1)
}

pub(super) async fn release_lease(pool: &SqlitePool, lease: &Lease) -> StoreResult<()> {
    sqlx::query(
        "UPDATE sessions SET lease_owner = NULL, lease_until = NULL WHERE id = ?1 AND fence = ?2",
    )
    .bind(lease.session_id)
    .bind(lease.fence)
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn holds_lease(pool: &SqlitePool, lease: &Lease) -> StoreResult<bool> {
    let mut conn = pool.acquire().await?;
    holds(&mut conn, lease).await
}

pub(super) async fn cancel_requested(pool: &SqlitePool, id: Uuid) -> StoreResult<bool> {
    let flagged: Option<bool> =
        sqlx::query_scalar("SELECT cancel_requested FROM sessions WHERE id = ?1")
            .bind(id)
            .fetch_optional(pool)
            .await?;
    Ok(flagged.unwrap_or(false))
}
