//! Rows as `agentq_sqlite` returns them, their domain types, and what several operations
//! share: reading a whole session, a session's head after a change, the totals a `done` event
//! carries, and appending events.

use agentq_sqlite::{self as sql, rows as stmt};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use sqlx::SqliteConnection;
use uuid::Uuid;

use super::super::error::{StoreError, StoreResult};
use super::super::model::{Head, SessionRecord, SessionState, Spend, StepRecord};
use super::super::storable;
use super::super::view;
use super::time;
use crate::schemas::{
    FailureCode, SessionError, SessionStatus, StepApproval, ToolCall, Usage, ValidatedRun,
};

pub(super) fn status(s: &str) -> StoreResult<SessionStatus> {
    SessionStatus::parse(s).ok_or_else(|| StoreError::Backend(format!("unknown status {s:?}")))
}

pub(super) fn error(code: Option<String>, message: Option<String>) -> Option<SessionError> {
    code.map(|code| SessionError {
        code: FailureCode::parse(&code),
        message: message.unwrap_or_default(),
    })
}

fn json<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> StoreResult<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Backend(format!("unreadable {what}: {e}")))
}

/// A session's fields after a change, and the number of its last event.
pub(super) fn head(row: sql::Head) -> StoreResult<(Head, i64)> {
    let head = Head {
        id: row.id,
        status: status(&row.status)?,
        next_step: row.next_step.max(0) as u32,
        final_answer: row.final_answer,
        error: error(row.error_code, row.error_message),
        cancel_requested: row.cancel_requested,
        version: row.version,
        approval_expires_at: row.approval_expires_at.map(time),
        updated_at: time(row.updated_at),
    };
    Ok((head, row.event_seq))
}

fn record(row: stmt::Session) -> StoreResult<SessionRecord> {
    Ok(SessionRecord {
        id: row.id,
        org_id: row.org_id,
        status: status(&row.status)?,
        run: json::<ValidatedRun>(&row.request, "session request")?,
        next_step: row.next_step.max(0) as u32,
        final_answer: row.final_answer,
        error: error(row.error_code, row.error_message),
        cancel_requested: row.cancel_requested,
        version: row.version,
        deadline_at: time(row.deadline_at),
        approval_expires_at: row.approval_expires_at.map(time),
        created_at: time(row.created_at),
        updated_at: time(row.updated_at),
    })
}

/// A stored step as the domain reads it.
pub(super) fn step(row: stmt::Step) -> StoreResult<StepRecord> {
    let approval = row.approved_at.map(|at| StepApproval {
        approved: row.approval.as_deref() == Some("approved"),
        reason: row.approval_reason,
        decided_by: row.approved_by,
        decided_at: time(at),
    });
    Ok(StepRecord {
        index: row.step_index.max(0) as u32,
        thought: row.thought,
        llm_content: json(&row.llm_content, "step content")?,
        actions: json::<Vec<ToolCall>>(&row.actions, "step actions")?,
        is_final: row.is_final,
        final_answer: row.final_answer,
        observations: json::<Vec<Value>>(&row.observations, "step observations")?,
        calls_started: row.calls_started.max(0) as u32,
        invalid_output: row.invalid_output,
        reviews: row
            .approval_details
            .map(|r| json::<Value>(&r, "approval details"))
            .transpose()?,
        approval,
        started_at: time(row.started_at),
        finished_at: row.finished_at.map(time),
    })
}

/// One step, if stored.
pub(super) async fn read_step(
    conn: &mut SqliteConnection,
    id: Uuid,
    index: u32,
) -> StoreResult<Option<StepRecord>> {
    stmt::step(&mut *conn, id, i64::from(index))
        .await?
        .map(step)
        .transpose()
}

/// What each step's LLM calls cost, in step order, summed exactly.
pub(super) async fn spend(conn: &mut SqliteConnection, id: Uuid) -> StoreResult<Vec<(u32, Spend)>> {
    let mut spend: Vec<(u32, Spend)> = Vec::new();
    for call in stmt::calls(&mut *conn, id).await? {
        let cost = call
            .cost_usd
            .map(|c| {
                c.parse::<Decimal>().map_err(|e| {
                    StoreError::Backend(format!("unreadable cost {c:?} in the ledger: {e}"))
                })
            })
            .transpose()?;
        let one = Spend {
            calls: 1,
            usage: Usage {
                input_tokens: call.input_tokens.max(0) as u64,
                output_tokens: call.output_tokens.max(0) as u64,
                cache_read_tokens: call.cache_read_tokens.max(0) as u64,
                cache_write_tokens: call.cache_write_tokens.max(0) as u64,
                cache_write_1h_tokens: call.cache_write_1h_tokens.max(0) as u64,
            },
            cost_usd: cost,
        };
        let index = call.step_index.max(0) as u32;
        match spend.last_mut() {
            Some((i, total)) if *i == index => total.add(&one),
            _ => {
                let mut total = Spend::zero();
                total.add(&one);
                spend.push((index, total));
            }
        }
    }
    Ok(spend)
}

/// The whole session: its row, its steps and what each step spent.
pub(super) async fn load(
    conn: &mut SqliteConnection,
    id: Uuid,
) -> StoreResult<Option<SessionState>> {
    let Some(row) = stmt::session(&mut *conn, id).await? else {
        return Ok(None);
    };
    let record = record(row)?;
    let steps = stmt::steps(&mut *conn, id)
        .await?
        .into_iter()
        .map(step)
        .collect::<StoreResult<Vec<_>>>()?;
    let spend = spend(conn, id).await?;
    Ok(Some(SessionState {
        record,
        steps,
        spend,
    }))
}

/// The session's totals as clients see them (the `done` event's), from the ledger.
pub(super) async fn totals(conn: &mut SqliteConnection, id: Uuid) -> StoreResult<Value> {
    let steps = stmt::step_count(&mut *conn, id).await?;
    let mut total = Spend::zero();
    for (_, s) in spend(conn, id).await? {
        total.add(&s);
    }
    Ok(json!(view::totals(steps.max(0) as usize, &total)))
}

/// The `status` (and, when it ended, `done`) data for a head.
pub(super) fn status_event(head: &Head) -> Value {
    json!({"status": head.status.as_str(), "error": head.error.as_ref().map(|e| {
        json!({"code": e.code.as_str(), "message": e.message})
    })})
}

pub(super) fn done_event(head: &Head, totals: Value) -> Value {
    json!({"status": head.status.as_str(), "final_answer": head.final_answer,
        "error": head.error.as_ref().map(|e| json!({"code": e.code.as_str(), "message": e.message})),
        "totals": totals})
}

/// Appends events `seq`, `seq + 1`, ... to the session's log (their numbers were taken from
/// `sessions.event_seq` in the same transaction).
pub(super) async fn append_events(
    conn: &mut SqliteConnection,
    id: Uuid,
    first_seq: i64,
    events: &[(&str, &Value)],
    at: i64,
) -> StoreResult<()> {
    for (i, (kind, data)) in events.iter().enumerate() {
        let seq = first_seq + i as i64;
        let data = storable::json(data).to_string();
        stmt::append_event(&mut *conn, id, seq, kind, &data, at).await?;
    }
    Ok(())
}
