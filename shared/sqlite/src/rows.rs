//! What several operations read or write: a session's row, its steps, its ledger, and its
//! event log.

use sqlx::SqliteExecutor;
use uuid::Uuid;

/// A session's row, as the domain reads it (not the lease's bookkeeping).
#[derive(Debug)]
pub struct Session {
    pub id: Uuid,
    pub org_id: Uuid,
    pub status: String,
    /// The validated run, as JSON.
    pub request: String,
    pub next_step: i64,
    pub final_answer: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub cancel_requested: bool,
    pub version: i64,
    pub deadline_at: i64,
    pub approval_expires_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

pub async fn session(db: impl SqliteExecutor<'_>, id: Uuid) -> sqlx::Result<Option<Session>> {
    sqlx::query_as!(
        Session,
        r#"SELECT id AS "id!: Uuid", org_id AS "org_id: Uuid", status, request, next_step,
                  final_answer, error_code, error_message,
                  cancel_requested AS "cancel_requested: bool", version, deadline_at,
                  approval_expires_at, created_at, updated_at
           FROM sessions WHERE id = ?1"#,
        id,
    )
    .fetch_optional(db)
    .await
}

/// A stored step.
#[derive(Debug)]
pub struct Step {
    pub step_index: i64,
    pub thought: Option<String>,
    /// JSON: the model's turn.
    pub llm_content: String,
    /// JSON: the tool calls.
    pub actions: String,
    pub is_final: bool,
    pub final_answer: Option<String>,
    /// JSON: the results of the calls that finished.
    pub observations: String,
    pub calls_started: i64,
    pub invalid_output: Option<String>,
    /// JSON: what the approver was shown.
    pub approval_details: Option<String>,
    pub approval: Option<String>,
    pub approval_reason: Option<String>,
    pub approved_by: Option<Uuid>,
    pub approved_at: Option<i64>,
    pub started_at: i64,
    pub finished_at: Option<i64>,
}

/// Step `index` of the session, if stored.
pub async fn step(
    db: impl SqliteExecutor<'_>,
    session_id: Uuid,
    index: i64,
) -> sqlx::Result<Option<Step>> {
    sqlx::query_as!(
        Step,
        r#"SELECT step_index, thought, llm_content, actions, is_final AS "is_final: bool",
                  final_answer, observations, calls_started, invalid_output, approval_details,
                  approval, approval_reason, approved_by AS "approved_by: Uuid", approved_at,
                  started_at, finished_at
           FROM steps WHERE session_id = ?1 AND step_index = ?2"#,
        session_id,
        index,
    )
    .fetch_optional(db)
    .await
}

/// The session's steps, in order.
pub async fn steps(db: impl SqliteExecutor<'_>, session_id: Uuid) -> sqlx::Result<Vec<Step>> {
    sqlx::query_as!(
        Step,
        r#"SELECT step_index, thought, llm_content, actions, is_final AS "is_final: bool",
                  final_answer, observations, calls_started, invalid_output, approval_details,
                  approval, approval_reason, approved_by AS "approved_by: Uuid", approved_at,
                  started_at, finished_at
           FROM steps WHERE session_id = ?1 ORDER BY step_index"#,
        session_id,
    )
    .fetch_all(db)
    .await
}

pub async fn step_count(db: impl SqliteExecutor<'_>, session_id: Uuid) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "steps!: i64" FROM steps WHERE session_id = ?1"#,
        session_id,
    )
    .fetch_one(db)
    .await
}

/// One row of the ledger.
#[derive(Debug)]
pub struct Call {
    pub step_index: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_write_tokens: i64,
    pub cache_write_1h_tokens: i64,
    /// Decimal text.
    pub cost_usd: Option<String>,
}

/// The session's LLM calls, by step and then in the order they were made.
pub async fn calls(db: impl SqliteExecutor<'_>, session_id: Uuid) -> sqlx::Result<Vec<Call>> {
    sqlx::query_as!(
        Call,
        "SELECT step_index, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens,
                cache_write_1h_tokens, cost_usd
         FROM llm_calls WHERE session_id = ?1 ORDER BY step_index, id",
        session_id,
    )
    .fetch_all(db)
    .await
}

/// Appends event `seq` to the session's log (its number taken from `sessions.event_seq` in the
/// same transaction).
pub async fn append_event(
    db: impl SqliteExecutor<'_>,
    session_id: Uuid,
    seq: i64,
    kind: &str,
    data: &str,
    at: i64,
) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO session_events (session_id, seq, kind, data, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        session_id,
        seq,
        kind,
        data,
        at,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// An event of the log.
#[derive(Debug)]
pub struct Event {
    pub seq: i64,
    pub kind: String,
    /// JSON.
    pub data: String,
    pub created_at: i64,
}

/// The session's events after `after`, in order, at most `limit`.
pub async fn events(
    db: impl SqliteExecutor<'_>,
    session_id: Uuid,
    after: i64,
    limit: i64,
) -> sqlx::Result<Vec<Event>> {
    sqlx::query_as!(
        Event,
        "SELECT seq, kind, data, created_at FROM session_events
         WHERE session_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
        session_id,
        after,
        limit,
    )
    .fetch_all(db)
    .await
}
