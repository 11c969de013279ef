//! Rows as SQLite returns them, their domain types, and what several operations share: reading
//! a whole session, a session's head after a change, the totals a `done` event carries, and
//! appending events.

use rust_decimal::Decimal;
use serde_json::{Value, json};
use sqlx::SqliteConnection;
use sqlx::sqlite::SqliteRow;
use sqlx::{FromRow, Row};
use uuid::Uuid;

use super::super::error::{StoreError, StoreResult};
use super::super::model::{Head, SessionRecord, SessionState, Spend, StepRecord};
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

/// The session columns a transition returns, in [`Head`]'s order.
pub(super) const HEAD: &str = "id, status, next_step, final_answer, error_code, error_message, \
     cancel_requested, version, approval_expires_at, updated_at";

pub(super) fn head(row: &SqliteRow) -> StoreResult<Head> {
    Ok(Head {
        id: row.try_get("id")?,
        status: status(row.try_get("status")?)?,
        next_step: row.try_get::<i64, _>("next_step")?.max(0) as u32,
        final_answer: row.try_get("final_answer")?,
        error: error(row.try_get("error_code")?, row.try_get("error_message")?),
        cancel_requested: row.try_get("cancel_requested")?,
        version: row.try_get("version")?,
        approval_expires_at: row
            .try_get::<Option<i64>, _>("approval_expires_at")?
            .map(time),
        updated_at: time(row.try_get("updated_at")?),
    })
}

fn record(row: &SqliteRow) -> StoreResult<SessionRecord> {
    let request: String = row.try_get("request")?;
    Ok(SessionRecord {
        id: row.try_get("id")?,
        org_id: row.try_get("org_id")?,
        status: status(row.try_get("status")?)?,
        run: json::<ValidatedRun>(&request, "session request")?,
        next_step: row.try_get::<i64, _>("next_step")?.max(0) as u32,
        final_answer: row.try_get("final_answer")?,
        error: error(row.try_get("error_code")?, row.try_get("error_message")?),
        cancel_requested: row.try_get("cancel_requested")?,
        version: row.try_get("version")?,
        deadline_at: time(row.try_get("deadline_at")?),
        approval_expires_at: row
            .try_get::<Option<i64>, _>("approval_expires_at")?
            .map(time),
        created_at: time(row.try_get("created_at")?),
        updated_at: time(row.try_get("updated_at")?),
    })
}

/// A stored step as the domain reads it.
pub(super) fn step(row: &SqliteRow) -> StoreResult<StepRecord> {
    let approval = match row.try_get::<Option<i64>, _>("approved_at")? {
        Some(at) => Some(StepApproval {
            approved: row.try_get::<Option<String>, _>("approval")?.as_deref() == Some("approved"),
            reason: row.try_get("approval_reason")?,
            decided_by: row.try_get("approved_by")?,
            decided_at: time(at),
        }),
        None => None,
    };
    let reviews: Option<String> = row.try_get("approval_details")?;
    Ok(StepRecord {
        index: row.try_get::<i64, _>("step_index")?.max(0) as u32,
        thought: row.try_get("thought")?,
        llm_content: json(row.try_get("llm_content")?, "step content")?,
        actions: json::<Vec<ToolCall>>(row.try_get("actions")?, "step actions")?,
        is_final: row.try_get("is_final")?,
        final_answer: row.try_get("final_answer")?,
        observations: json::<Vec<Value>>(row.try_get("observations")?, "step observations")?,
        calls_started: row.try_get::<i64, _>("calls_started")?.max(0) as u32,
        invalid_output: row.try_get("invalid_output")?,
        reviews: reviews
            .map(|r| json::<Value>(&r, "approval details"))
            .transpose()?,
        approval,
        started_at: time(row.try_get("started_at")?),
        finished_at: row.try_get::<Option<i64>, _>("finished_at")?.map(time),
    })
}

/// One step, if stored.
pub(super) async fn read_step(
    conn: &mut SqliteConnection,
    id: Uuid,
    index: u32,
) -> StoreResult<Option<StepRecord>> {
    let row = sqlx::query("SELECT * FROM steps WHERE session_id = ?1 AND step_index = ?2")
        .bind(id)
        .bind(i64::from(index))
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(step).transpose()
}

/// One ledger row.
#[derive(FromRow)]
struct CallRow {
    step_index: i64,
    input_tokens: i64,
    output_tokens: i64,
    cache_read_tokens: i64,
    cache_write_tokens: i64,
    cache_write_1h_tokens: i64,
    cost_usd: Option<String>,
}

/// What each step's LLM calls cost, in step order, summed exactly.
pub(super) async fn spend(conn: &mut SqliteConnection, id: Uuid) -> StoreResult<Vec<(u32, Spend)>> {
    let calls: Vec<CallRow> = sqlx::query_as(
        "SELECT step_index, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens,
                cache_write_1h_tokens, cost_usd
         FROM llm_calls WHERE session_id = ?1 ORDER BY step_index, id",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    let mut spend: Vec<(u32, Spend)> = Vec::new();
    for call in calls {
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
    let row = sqlx::query("SELECT * FROM sessions WHERE id = ?1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let record = record(&row)?;
    let steps = sqlx::query("SELECT * FROM steps WHERE session_id = ?1 ORDER BY step_index")
        .bind(id)
        .fetch_all(&mut *conn)
        .await?
        .iter()
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
    let steps: i64 = sqlx::query_scalar("SELECT count(*) FROM steps WHERE session_id = ?1")
        .bind(id)
        .fetch_one(&mut *conn)
        .await?;
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
        sqlx::query(
            "INSERT INTO session_events (session_id, seq, kind, data, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .bind(id)
        .bind(first_seq + i as i64)
        .bind(*kind)
        .bind(data.to_string())
        .bind(at)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}
