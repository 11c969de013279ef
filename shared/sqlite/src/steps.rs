//! The step protocol's statements. Each write names the lease's fence, so a worker that lost the
//! lease changes nothing; a session's change returns its [`Head`].

use sqlx::SqliteExecutor;
use uuid::Uuid;

use crate::{Ending, Head};

/// The lease just taken.
#[derive(Debug)]
pub struct Taken {
    pub fence: i64,
    pub step_attempts: i64,
    pub event_seq: i64,
    /// Whether the session was pending and is now running (its `updated_at` moved to `at`).
    pub became_running: bool,
}

/// Takes the lease until `at + ttl` for `owner` on step `step`, if it is the current step,
/// the session is unfinished and no one holds a live lease; marks a pending session running,
/// taking its `status` event's number.
pub async fn take_lease(
    db: impl SqliteExecutor<'_>,
    id: Uuid,
    owner: &str,
    at: i64,
    ttl: i64,
    step: i64,
) -> sqlx::Result<Option<Taken>> {
    sqlx::query_as!(
        Taken,
        r#"UPDATE sessions
           SET lease_owner = ?2, lease_until = ?3 + ?4, fence = fence + 1,
               step_attempts = step_attempts + 1,
               version = version + (status = 'pending'),
               event_seq = event_seq + (status = 'pending'),
               updated_at = CASE WHEN status = 'pending' THEN ?3 ELSE updated_at END,
               status = 'running'
           WHERE id = ?1 AND next_step = ?5 AND status IN ('pending', 'running')
             AND (lease_until IS NULL OR lease_until < ?3)
           RETURNING fence AS "fence!: i64", step_attempts AS "step_attempts!: i64",
               event_seq AS "event_seq!: i64", (updated_at = ?3) AS "became_running!: bool""#,
        id,
        owner,
        at,
        ttl,
        step,
    )
    .fetch_optional(db)
    .await
}

/// Where a session stands when its lease was not taken.
#[derive(Debug)]
pub struct LeaseState {
    pub status: String,
    pub next_step: i64,
    /// Whether a live lease is held at `at`.
    pub held: bool,
}

pub async fn lease_state(
    db: impl SqliteExecutor<'_>,
    id: Uuid,
    at: i64,
) -> sqlx::Result<Option<LeaseState>> {
    sqlx::query_as!(
        LeaseState,
        r#"SELECT status, next_step,
                  (lease_until IS NOT NULL AND lease_until >= ?2) AS "held!: bool"
           FROM sessions WHERE id = ?1"#,
        id,
        at,
    )
    .fetch_optional(db)
    .await
}

/// The session's fence, if it exists.
pub async fn fence(db: impl SqliteExecutor<'_>, id: Uuid) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar!("SELECT fence FROM sessions WHERE id = ?1", id)
        .fetch_optional(db)
        .await
}

/// Whether the session is unfinished (not awaiting approval) with its fence at `fence`.
pub async fn fenced(db: impl SqliteExecutor<'_>, id: Uuid, fence: i64) -> sqlx::Result<bool> {
    let found = sqlx::query_scalar!(
        r#"SELECT 1 AS "found!: i64" FROM sessions
           WHERE id = ?1 AND fence = ?2 AND status IN ('pending', 'running')"#,
        id,
        fence,
    )
    .fetch_optional(db)
    .await?;
    Ok(found.is_some())
}

/// A decided step's row.
#[derive(Debug)]
pub struct NewStep<'a> {
    pub session_id: Uuid,
    pub step_index: i64,
    pub thought: Option<&'a str>,
    /// JSON.
    pub llm_content: &'a str,
    /// JSON.
    pub actions: &'a str,
    pub is_final: bool,
    pub final_answer: Option<&'a str>,
    pub invalid_output: Option<&'a str>,
    pub started_at: i64,
    pub decided_at: i64,
    pub finished_at: Option<i64>,
}

/// Inserts the step unless one with its index is stored.
pub async fn insert_step(db: impl SqliteExecutor<'_>, step: &NewStep<'_>) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO steps (session_id, step_index, thought, llm_content, actions, is_final,
                            final_answer, invalid_output, started_at, decided_at, finished_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT (session_id, step_index) DO NOTHING",
        step.session_id,
        step.step_index,
        step.thought,
        step.llm_content,
        step.actions,
        step.is_final,
        step.final_answer,
        step.invalid_output,
        step.started_at,
        step.decided_at,
        step.finished_at,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The change a decision makes: one event's number (the step's), or with `ending` three (the
/// step's, the status' and `done`'s) and the session ended, its lease released. A final answer
/// completes it unless a cancel came first.
pub async fn decided(
    db: impl SqliteExecutor<'_>,
    id: Uuid,
    at: i64,
    ending: Option<Ending<'_>>,
) -> sqlx::Result<Head> {
    let (status, answer) = (
        ending.map(|e| e.status),
        ending.and_then(|e| e.final_answer),
    );
    let (code, message) = (
        ending.and_then(|e| e.error_code),
        ending.and_then(|e| e.error_message),
    );
    sqlx::query_as!(
        Head,
        r#"UPDATE sessions SET version = version + 1, updated_at = ?2,
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
           WHERE id = ?1
           RETURNING id AS "id!: Uuid", status AS "status!: String",
               next_step AS "next_step!: i64", final_answer AS "final_answer?: String",
               error_code AS "error_code?: String", error_message AS "error_message?: String",
               cancel_requested AS "cancel_requested!: bool", version AS "version!: i64",
               approval_expires_at AS "approval_expires_at?: i64",
               updated_at AS "updated_at!: i64", event_seq AS "event_seq!: i64""#,
        id,
        at,
        status,
        answer,
        code,
        message,
    )
    .fetch_one(db)
    .await
}

/// Marks call `call` of the step as started (`calls_started` past it) while the fence holds,
/// unless a later call already started; the number of rows changed (0 or 1).
pub async fn start_call(
    db: impl SqliteExecutor<'_>,
    session_id: Uuid,
    step_index: i64,
    call: i64,
    fence: i64,
    at: i64,
) -> sqlx::Result<u64> {
    let updated = sqlx::query!(
        "UPDATE steps SET calls_started = ?3 + 1, tool_started_at = coalesce(tool_started_at, ?5)
         WHERE session_id = ?1 AND step_index = ?2 AND calls_started <= ?3
           AND EXISTS (SELECT 1 FROM sessions WHERE id = ?1 AND fence = ?4)",
        session_id,
        step_index,
        call,
        fence,
        at,
    )
    .execute(db)
    .await?;
    Ok(updated.rows_affected())
}

/// Appends the result of call `call` (JSON) to the step's unless it is stored, while the fence
/// holds; the step finishes with its last call's result.
pub async fn append_observation(
    db: impl SqliteExecutor<'_>,
    session_id: Uuid,
    step_index: i64,
    call: i64,
    observation: &str,
    fence: i64,
    at: i64,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE steps SET observations = json_insert(observations, '$[#]', json(?4)),
             finished_at = CASE WHEN json_array_length(observations) + 1
                                     >= json_array_length(actions) THEN ?6 END
         WHERE session_id = ?1 AND step_index = ?2 AND json_array_length(observations) = ?3
           AND EXISTS (SELECT 1 FROM sessions WHERE id = ?1 AND fence = ?5)",
        session_id,
        step_index,
        call,
        observation,
        fence,
        at,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The change an observation makes (its `step` event's number taken); with `advance`, the
/// session moves to the next step and the lease is released. `None` if the fence moved on or
/// the session is no longer at `step`.
pub async fn observed(
    db: impl SqliteExecutor<'_>,
    id: Uuid,
    fence: i64,
    step: i64,
    at: i64,
    advance: bool,
) -> sqlx::Result<Option<Head>> {
    sqlx::query_as!(
        Head,
        r#"UPDATE sessions SET version = version + 1, updated_at = ?4, event_seq = event_seq + 1,
               next_step = CASE WHEN ?5 THEN next_step + 1 ELSE next_step END,
               step_attempts = CASE WHEN ?5 THEN 0 ELSE step_attempts END,
               lease_owner = CASE WHEN ?5 THEN NULL ELSE lease_owner END,
               lease_until = CASE WHEN ?5 THEN NULL ELSE lease_until END
           WHERE id = ?1 AND fence = ?2 AND next_step = ?3 AND status IN ('pending', 'running')
           RETURNING id AS "id!: Uuid", status AS "status!: String",
               next_step AS "next_step!: i64", final_answer AS "final_answer?: String",
               error_code AS "error_code?: String", error_message AS "error_message?: String",
               cancel_requested AS "cancel_requested!: bool", version AS "version!: i64",
               approval_expires_at AS "approval_expires_at?: i64",
               updated_at AS "updated_at!: i64", event_seq AS "event_seq!: i64""#,
        id,
        fence,
        step,
        at,
        advance,
    )
    .fetch_optional(db)
    .await
}

/// Moves the session from `step` to the next one and releases the lease, while the fence holds.
pub async fn advance(
    db: impl SqliteExecutor<'_>,
    id: Uuid,
    step: i64,
    fence: i64,
    at: i64,
) -> sqlx::Result<Option<Head>> {
    sqlx::query_as!(
        Head,
        r#"UPDATE sessions SET next_step = ?2 + 1, lease_owner = NULL, lease_until = NULL,
               step_attempts = 0, version = version + 1, updated_at = ?4
           WHERE id = ?1 AND next_step = ?2 AND fence = ?3 AND status IN ('pending', 'running')
           RETURNING id AS "id!: Uuid", status AS "status!: String",
               next_step AS "next_step!: i64", final_answer AS "final_answer?: String",
               error_code AS "error_code?: String", error_message AS "error_message?: String",
               cancel_requested AS "cancel_requested!: bool", version AS "version!: i64",
               approval_expires_at AS "approval_expires_at?: i64",
               updated_at AS "updated_at!: i64", event_seq AS "event_seq!: i64""#,
        id,
        step,
        fence,
        at,
    )
    .fetch_optional(db)
    .await
}

/// Stores what the approver is shown (JSON) on the step, while the fence holds and the session
/// is unfinished; the number of rows changed (0 or 1).
pub async fn set_reviews(
    db: impl SqliteExecutor<'_>,
    session_id: Uuid,
    step_index: i64,
    reviews: &str,
    fence: i64,
) -> sqlx::Result<u64> {
    let updated = sqlx::query!(
        "UPDATE steps SET approval_details = ?3
         WHERE session_id = ?1 AND step_index = ?2
           AND EXISTS (SELECT 1 FROM sessions WHERE id = ?1 AND fence = ?4
                       AND status IN ('pending', 'running'))",
        session_id,
        step_index,
        reviews,
        fence,
    )
    .execute(db)
    .await?;
    Ok(updated.rows_affected())
}

/// The session waits for a human until `expires_at`, without the lease, taking two events'
/// numbers (the status' and the approval's).
pub async fn await_approval(
    db: impl SqliteExecutor<'_>,
    id: Uuid,
    fence: i64,
    expires_at: i64,
    at: i64,
) -> sqlx::Result<Head> {
    sqlx::query_as!(
        Head,
        r#"UPDATE sessions SET status = 'awaiting_approval', approval_expires_at = ?3,
               lease_owner = NULL, lease_until = NULL, step_attempts = 0,
               event_seq = event_seq + 2, version = version + 1, updated_at = ?4
           WHERE id = ?1 AND fence = ?2
           RETURNING id AS "id!: Uuid", status AS "status!: String",
               next_step AS "next_step!: i64", final_answer AS "final_answer?: String",
               error_code AS "error_code?: String", error_message AS "error_message?: String",
               cancel_requested AS "cancel_requested!: bool", version AS "version!: i64",
               approval_expires_at AS "approval_expires_at?: i64",
               updated_at AS "updated_at!: i64", event_seq AS "event_seq!: i64""#,
        id,
        fence,
        expires_at,
        at,
    )
    .fetch_one(db)
    .await
}

/// Ends the unfinished session (only at `fence`, when given), taking two events' numbers (the
/// status' and `done`'s); a completion becomes a cancel when one was asked for. `None` when it
/// had already ended or the fence moved on.
pub async fn finish(
    db: impl SqliteExecutor<'_>,
    id: Uuid,
    ending: Ending<'_>,
    fence: Option<i64>,
    at: i64,
) -> sqlx::Result<Option<Head>> {
    sqlx::query_as!(
        Head,
        r#"UPDATE sessions SET
               status = CASE WHEN ?2 = 'completed' AND cancel_requested THEN 'cancelled'
                             ELSE ?2 END,
               final_answer = CASE WHEN ?2 = 'completed' AND cancel_requested THEN NULL
                                   ELSE ?3 END,
               error_code = ?4, error_message = ?5,
               lease_owner = NULL, lease_until = NULL, approval_expires_at = NULL,
               event_seq = event_seq + 2, version = version + 1, updated_at = ?7
           WHERE id = ?1 AND (?6 IS NULL OR fence = ?6)
             AND status IN ('queued', 'pending', 'running', 'awaiting_approval')
           RETURNING id AS "id!: Uuid", status AS "status!: String",
               next_step AS "next_step!: i64", final_answer AS "final_answer?: String",
               error_code AS "error_code?: String", error_message AS "error_message?: String",
               cancel_requested AS "cancel_requested!: bool", version AS "version!: i64",
               approval_expires_at AS "approval_expires_at?: i64",
               updated_at AS "updated_at!: i64", event_seq AS "event_seq!: i64""#,
        id,
        ending.status,
        ending.final_answer,
        ending.error_code,
        ending.error_message,
        fence,
        at,
    )
    .fetch_optional(db)
    .await
}

/// Extends the lease to `at + ttl` if `owner` still holds it at `fence`; the number of rows
/// changed (0 or 1).
pub async fn renew_lease(
    db: impl SqliteExecutor<'_>,
    id: Uuid,
    fence: i64,
    owner: &str,
    at: i64,
    ttl: i64,
) -> sqlx::Result<u64> {
    let renewed = sqlx::query!(
        "UPDATE sessions SET lease_until = ?3 + ?4
         WHERE id = ?1 AND fence = ?2 AND lease_owner = ?5",
        id,
        fence,
        at,
        ttl,
        owner,
    )
    .execute(db)
    .await?;
    Ok(renewed.rows_affected())
}

pub async fn release_lease(db: impl SqliteExecutor<'_>, id: Uuid, fence: i64) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE sessions SET lease_owner = NULL, lease_until = NULL WHERE id = ?1 AND fence = ?2",
        id,
        fence,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Whether a cancel was asked for; `None` if there is no such session.
pub async fn cancel_requested(db: impl SqliteExecutor<'_>, id: Uuid) -> sqlx::Result<Option<bool>> {
    sqlx::query_scalar!(
        r#"SELECT cancel_requested AS "cancel_requested: bool" FROM sessions WHERE id = ?1"#,
        id,
    )
    .fetch_optional(db)
    .await
}
