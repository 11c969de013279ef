//! The step protocol's operations on SQLite. Each runs in the write transaction `mod.rs` opens
//! and checks the lease's fence, so a worker that lost the lease changes nothing; each returns
//! the session's fields after it, so the worker's copy (and the hot copy written from it) stays
//! exact. The same effects, in the same order, as `../postgres/steps.rs`.

use std::time::Duration;

use agentq_sqlite::{self as sql, steps as stmt};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::{SqliteConnection, SqlitePool};
use uuid::Uuid;

use super::super::durable::{Announced, DecisionStored};
use super::super::error::{StoreError, StoreResult};
use super::super::model::{Begin, Decision, Ending, Head, Lease, LlmCallRecord, Spend, StepRun};
use super::super::storable;
use super::rows::{self, append_events, done_event, head, status, status_event};
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
    let taken =
        stmt::take_lease(&mut *conn, id, owner, at, ttl_micros(ttl), i64::from(step)).await?;
    let Some(taken) = taken else {
        return why_not(conn, id, step).await;
    };
    let state = rows::load(conn, id)
        .await?
        .ok_or(StoreError::NotFound("session"))?;
    // Only a pending session's `updated_at` moves to this statement's time.
    let became_running = taken.became_running;
    if became_running {
        let running = json!({"status": "running", "error": null});
        append_events(conn, id, taken.event_seq, &[("status", &running)], at).await?;
    }
    Ok(Begin::Leased(Box::new(StepRun {
        lease: Lease {
            session_id: id,
            owner: owner.to_owned(),
            fence: taken.fence,
            attempt: taken.step_attempts.max(0) as u32,
        },
        step,
        state,
        became_running,
        traceparent: None,
    })))
}

/// Why the lease was not taken.
async fn why_not(conn: &mut SqliteConnection, id: Uuid, step: u32) -> StoreResult<Begin> {
    let Some(row) = stmt::lease_state(&mut *conn, id, now()).await? else {
        return Ok(Begin::Missing);
    };
    let current = status(&row.status)?;
    let next_step = row.next_step;
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
    let fence = stmt::fence(&mut *conn, lease.session_id).await?;
    Ok(fence == Some(lease.fence))
}

/// The ending with its texts made storable (as the Postgres store writes them).
fn storable_ending(ending: &Ending) -> Ending {
    match ending {
        Ending::Completed { final_answer } => Ending::Completed {
            final_answer: storable::text(final_answer).into_owned(),
        },
        Ending::Failed { code, message } => Ending::Failed {
            code: *code,
            message: storable::text(message).into_owned(),
        },
        Ending::Cancelled => Ending::Cancelled,
    }
}

/// The status, answer and error columns an ending sets.
fn ending_columns(ending: &Ending) -> sql::Ending<'_> {
    let (status, final_answer, error_code, error_message) = match ending {
        Ending::Completed { final_answer } => {
            ("completed", Some(final_answer.as_str()), None, None)
        }
        Ending::Failed { code, message } => {
            ("failed", None, Some(code.as_str()), Some(message.as_str()))
        }
        Ending::Cancelled => ("cancelled", None, None, None),
    };
    sql::Ending {
        status,
        final_answer,
        error_code,
        error_message,
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
    if !stmt::fenced(&mut *conn, id, lease.fence).await? {
        return Err(StoreError::LeaseLost(id));
    }
    if let Some(call) = call {
        sessions::record_llm_call(conn, call).await?;
    }
    let actions = storable::to_json(&decision.actions)
        .map_err(encode)?
        .to_string();
    let llm_content = storable::json(&decision.llm_content).to_string();
    let thought = storable::opt_text(decision.thought.as_deref());
    let final_answer = storable::opt_text(decision.final_answer.as_deref());
    let invalid_output = storable::opt_text(decision.invalid_output.as_deref());
    let row = stmt::NewStep {
        session_id: id,
        step_index: i64::from(step),
        thought: thought.as_deref(),
        llm_content: &llm_content,
        actions: &actions,
        is_final: decision.is_final,
        final_answer: final_answer.as_deref(),
        invalid_output: invalid_output.as_deref(),
        started_at: micros(decision.started_at),
        decided_at: at,
        finished_at: decision.actions.is_empty().then_some(at),
    };
    stmt::insert_step(&mut *conn, &row).await?;
    let ending = ending.map(storable_ending);
    let changed = stmt::decided(&mut *conn, id, at, ending.as_ref().map(ending_columns)).await?;
    let (head, seq) = head(changed)?;
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
    let (id, step) = (lease.session_id, i64::from(step));
    let updated = stmt::start_call(&mut *conn, id, step, call as i64, lease.fence, now()).await?;
    if updated == 1 {
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
    let (id, at, step) = (lease.session_id, now(), i64::from(step));
    let observation = storable::json(observation).to_string();
    stmt::append_observation(
        &mut *conn,
        id,
        step,
        call as i64,
        &observation,
        lease.fence,
        at,
    )
    .await?;
    let Some(changed) = stmt::observed(&mut *conn, id, lease.fence, step, at, advance).await?
    else {
        return Err(StoreError::LeaseLost(id));
    };
    let (head, seq) = head(changed)?;
    append_events(conn, id, seq, &[("step", event)], at).await?;
    Ok(head)
}

/// Moves the session from `step` to the next one and releases the lease.
pub(super) async fn advance(
    conn: &mut SqliteConnection,
    lease: &Lease,
    step: u32,
) -> StoreResult<Head> {
    let changed = stmt::advance(
        &mut *conn,
        lease.session_id,
        i64::from(step),
        lease.fence,
        now(),
    )
    .await?
    .ok_or(StoreError::LeaseLost(lease.session_id))?;
    Ok(head(changed)?.0)
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
    let reviews = storable::json(reviews).to_string();
    let reviewed =
        stmt::set_reviews(&mut *conn, id, i64::from(step), &reviews, lease.fence).await?;
    if reviewed == 0 {
        return Err(StoreError::LeaseLost(id));
    }
    let changed = stmt::await_approval(&mut *conn, id, lease.fence, micros(expires_at), at).await?;
    let (head, seq) = head(changed)?;
    let awaiting = json!({"status": "awaiting_approval", "error": null});
    append_events(
        conn,
        id,
        seq - 1,
        &[("status", &awaiting), ("approval", event)],
        at,
    )
    .await?;
    Ok(head)
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
    let ending = storable_ending(ending);
    let Some(changed) = stmt::finish(&mut *conn, id, ending_columns(&ending), fence, at).await?
    else {
        return Ok(None);
    };
    let (head, seq) = head(changed)?;
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
    let (id, fence, owner) = (lease.session_id, lease.fence, &lease.owner);
    let renewed = stmt::renew_lease(pool, id, fence, owner, now(), ttl_micros(ttl)).await?;
    Ok(renewed == 1)
}

pub(super) async fn release_lease(pool: &SqlitePool, lease: &Lease) -> StoreResult<()> {
    stmt::release_lease(pool, lease.session_id, lease.fence).await?;
    Ok(())
}

pub(super) async fn holds_lease(pool: &SqlitePool, lease: &Lease) -> StoreResult<bool> {
    let mut conn = pool.acquire().await?;
    holds(&mut conn, lease).await
}

pub(super) async fn cancel_requested(pool: &SqlitePool, id: Uuid) -> StoreResult<bool> {
    let flagged = stmt::cancel_requested(pool, id).await?;
    Ok(flagged.unwrap_or(false))
}
