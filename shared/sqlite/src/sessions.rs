//! The API's statements: keys, creating a session (with its `Idempotency-Key`), cancelling,
//! deciding an approval, the ledger and an org's listing.

use sqlx::SqliteExecutor;
use uuid::Uuid;

use crate::Head;

/// A live key's owner, as verification returns it.
#[derive(Debug)]
pub struct Key {
    pub org_id: Uuid,
    pub id: Uuid,
    pub expires_at: Option<i64>,
}

/// Marks the live key (not revoked, not expired at `at`) whose hash is `key_hash` used at `at`,
/// and returns it.
pub async fn use_key(
    db: impl SqliteExecutor<'_>,
    key_hash: &str,
    at: i64,
) -> sqlx::Result<Option<Key>> {
    sqlx::query_as!(
        Key,
        r#"UPDATE api_keys SET last_used_at = ?2
           WHERE key_hash = ?1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?2)
           RETURNING org_id AS "org_id!: Uuid", id AS "id!: Uuid", expires_at AS "expires_at?: i64""#,
        key_hash,
        at,
    )
    .fetch_optional(db)
    .await
}

/// An org's own rate limit columns.
pub struct OrgLimit {
    pub rate_limit_per_sec: Option<i64>,
    pub rate_limit_burst: Option<i64>,
    pub max_active_sessions: Option<i64>,
}

pub async fn org_limit(db: impl SqliteExecutor<'_>, org_id: Uuid) -> sqlx::Result<OrgLimit> {
    sqlx::query_as!(
        OrgLimit,
        r#"SELECT rate_limit_per_sec AS "rate_limit_per_sec?: i64",
                  rate_limit_burst AS "rate_limit_burst?: i64",
                  max_active_sessions AS "max_active_sessions?: i64"
           FROM orgs WHERE id = ?1"#,
        org_id,
    )
    .fetch_one(db)
    .await
}

/// A key as operators see it.
pub struct KeyRow {
    pub id: Uuid,
    pub name: Option<String>,
    pub prefix: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// The org's keys, oldest first.
pub async fn keys_of(db: impl SqliteExecutor<'_>, org_id: Uuid) -> sqlx::Result<Vec<KeyRow>> {
    sqlx::query_as!(
        KeyRow,
        r#"SELECT id AS "id!: Uuid", name, key_prefix AS prefix, created_at,
                  last_used_at AS "last_used_at?: i64", expires_at AS "expires_at?: i64",
                  revoked_at AS "revoked_at?: i64"
           FROM api_keys WHERE org_id = ?1 ORDER BY created_at, id"#,
        org_id,
    )
    .fetch_all(db)
    .await
}

/// The id of the org named `name`.
pub async fn org_id(db: impl SqliteExecutor<'_>, name: &str) -> sqlx::Result<Option<Uuid>> {
    sqlx::query_scalar!(
        r#"SELECT id AS "id!: Uuid" FROM orgs WHERE name = ?1"#,
        name
    )
    .fetch_optional(db)
    .await
}

/// Revokes the key at `at` unless it already was; the rows found.
pub async fn revoke_key(db: impl SqliteExecutor<'_>, id: Uuid, at: i64) -> sqlx::Result<u64> {
    let done = sqlx::query!(
        "UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?2) WHERE id = ?1",
        id,
        at,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Sets (or with NULLs clears) the rate limit of the org named `name`; the rows changed.
pub async fn set_rate_limit(
    db: impl SqliteExecutor<'_>,
    name: &str,
    per_sec: Option<i64>,
    burst: Option<i64>,
) -> sqlx::Result<u64> {
    let done = sqlx::query!(
        "UPDATE orgs SET rate_limit_per_sec = ?2, rate_limit_burst = ?3 WHERE name = ?1",
        name,
        per_sec,
        burst,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Sets (or with NULL clears) the active-session cap of the org named `name`; the rows changed.
pub async fn set_active_cap(
    db: impl SqliteExecutor<'_>,
    name: &str,
    max_active: Option<i64>,
) -> sqlx::Result<u64> {
    let done = sqlx::query!(
        "UPDATE orgs SET max_active_sessions = ?2 WHERE name = ?1",
        name,
        max_active,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// The id of the org named `name`, made with `id` if there is none.
pub async fn upsert_org(
    db: impl SqliteExecutor<'_>,
    id: Uuid,
    name: &str,
    at: i64,
) -> sqlx::Result<Uuid> {
    sqlx::query_scalar!(
        r#"INSERT INTO orgs (id, name, created_at) VALUES (?1, ?2, ?3)
           ON CONFLICT (name) DO UPDATE SET name = excluded.name RETURNING id AS "id!: Uuid""#,
        id,
        name,
        at,
    )
    .fetch_one(db)
    .await
}

/// A key to insert.
pub struct NewKey<'a> {
    pub id: Uuid,
    pub org_id: Uuid,
    pub key_hash: &'a str,
    pub key_prefix: &'a str,
    pub name: Option<&'a str>,
    pub expires_at: Option<i64>,
    pub created_at: i64,
}

pub async fn insert_key(db: impl SqliteExecutor<'_>, key: &NewKey<'_>) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO api_keys (id, org_id, key_hash, key_prefix, name, expires_at, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        key.id,
        key.org_id,
        key.key_hash,
        key.key_prefix,
        key.name,
        key.expires_at,
        key.created_at,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// What an `Idempotency-Key` was first used for.
#[derive(Debug)]
pub struct Claimed {
    pub request_hash: String,
    pub session_id: Uuid,
}

pub async fn idempotency_key(
    db: impl SqliteExecutor<'_>,
    org_id: Uuid,
    key: &str,
) -> sqlx::Result<Option<Claimed>> {
    sqlx::query_as!(
        Claimed,
        r#"SELECT request_hash, session_id AS "session_id: Uuid"
           FROM idempotency_keys WHERE org_id = ?1 AND key = ?2"#,
        org_id,
        key,
    )
    .fetch_optional(db)
    .await
}

pub async fn insert_idempotency_key(
    db: impl SqliteExecutor<'_>,
    org_id: Uuid,
    key: &str,
    request_hash: &str,
    session_id: Uuid,
    at: i64,
) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO idempotency_keys (org_id, key, request_hash, session_id, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        org_id,
        key,
        request_hash,
        session_id,
        at,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// A new session's row.
#[derive(Debug)]
pub struct NewSession<'a> {
    pub id: Uuid,
    pub org_id: Uuid,
    /// `pending`, or `queued` for want of a slot.
    pub status: &'a str,
    pub model: &'a str,
    /// The validated run, as JSON.
    pub request: &'a str,
    pub max_steps: i64,
    pub deadline_at: i64,
    pub created_at: i64,
    pub traceparent: Option<&'a str>,
    pub max_active: Option<i64>,
}

/// Inserts the session with its first event's number taken.
pub async fn insert_session(db: impl SqliteExecutor<'_>, new: &NewSession<'_>) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO sessions (id, org_id, status, model, request, max_steps, deadline_at,
                               created_at, updated_at, event_seq, traceparent, max_active)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, 1, ?9, ?10)",
        new.id,
        new.org_id,
        new.status,
        new.model,
        new.request,
        new.max_steps,
        new.deadline_at,
        new.created_at,
        new.traceparent,
        new.max_active,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Whether the org has a free slot under `max_active`: fewer active sessions than that, and
/// none queued before.
pub async fn has_free_slot(
    db: impl SqliteExecutor<'_>,
    org_id: Uuid,
    max_active: i64,
) -> sqlx::Result<bool> {
    sqlx::query_scalar!(
        r#"SELECT NOT EXISTS (SELECT 1 FROM sessions WHERE org_id = ?1 AND status = 'queued')
              AND (SELECT count(*) FROM sessions
                   WHERE org_id = ?1 AND status IN ('pending', 'running', 'awaiting_approval'))
                  < ?2 AS "free!: bool""#,
        org_id,
        max_active,
    )
    .fetch_one(db)
    .await
}

/// The orgs with queued sessions (all, or just `org`).
pub async fn orgs_with_queued(
    db: impl SqliteExecutor<'_>,
    org: Option<Uuid>,
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar!(
        r#"SELECT DISTINCT org_id AS "org_id!: Uuid" FROM sessions
           WHERE status = 'queued' AND (?1 IS NULL OR org_id = ?1)
           ORDER BY org_id"#,
        org,
    )
    .fetch_all(db)
    .await
}

/// The org's active sessions (pending, running, awaiting approval).
pub async fn active_count(db: impl SqliteExecutor<'_>, org_id: Uuid) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!: i64" FROM sessions
           WHERE org_id = ?1 AND status IN ('pending', 'running', 'awaiting_approval')"#,
        org_id,
    )
    .fetch_one(db)
    .await
}

/// A queued session and the cap it waits under.
#[derive(Debug)]
pub struct Queued {
    pub id: Uuid,
    pub max_active: Option<i64>,
}

/// The org's queued sessions, oldest first.
pub async fn queued_of(db: impl SqliteExecutor<'_>, org_id: Uuid) -> sqlx::Result<Vec<Queued>> {
    sqlx::query_as!(
        Queued,
        r#"SELECT id AS "id!: Uuid", max_active AS "max_active?: i64" FROM sessions
           WHERE org_id = ?1 AND status = 'queued' ORDER BY created_at, id"#,
        org_id,
    )
    .fetch_all(db)
    .await
}

/// Makes a queued session `pending`, taking its next event's number.
pub async fn start_queued(
    db: impl SqliteExecutor<'_>,
    id: Uuid,
    at: i64,
) -> sqlx::Result<Option<Moved>> {
    let row = sqlx::query!(
        r#"UPDATE sessions SET status = 'pending', event_seq = event_seq + 1,
               version = version + 1, updated_at = ?2
           WHERE id = ?1 AND status = 'queued'
           RETURNING id AS "id!: Uuid", status AS "status!: String",
               next_step AS "next_step!: i64", final_answer AS "final_answer?: String",
               error_code AS "error_code?: String", error_message AS "error_message?: String",
               cancel_requested AS "cancel_requested!: bool", version AS "version!: i64",
               approval_expires_at AS "approval_expires_at?: i64",
               updated_at AS "updated_at!: i64", event_seq AS "event_seq!: i64",
               traceparent AS "traceparent?: String""#,
        id,
        at,
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| Moved {
        head: Head {
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
            event_seq: r.event_seq,
        },
        traceparent: r.traceparent,
    }))
}

/// A session a cancel is asked for, and whether no worker holds it at `at`.
#[derive(Debug)]
pub struct CancelTarget {
    pub org_id: Uuid,
    pub status: String,
    pub idle: bool,
}

pub async fn cancel_target(
    db: impl SqliteExecutor<'_>,
    id: Uuid,
    at: i64,
) -> sqlx::Result<Option<CancelTarget>> {
    sqlx::query_as!(
        CancelTarget,
        r#"SELECT org_id AS "org_id: Uuid", status,
                  (status = 'awaiting_approval' OR lease_until IS NULL OR lease_until < ?2)
                      AS "idle!: bool"
           FROM sessions WHERE id = ?1"#,
        id,
        at,
    )
    .fetch_optional(db)
    .await
}

/// Flags the cancel and moves the fence on, so a worker whose lease ran out writes nothing more.
pub async fn fence_cancelled(db: impl SqliteExecutor<'_>, id: Uuid) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE sessions SET cancel_requested = 1, fence = fence + 1 WHERE id = ?1",
        id,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Flags the cancel for the worker holding the session to see.
pub async fn flag_cancel(db: impl SqliteExecutor<'_>, id: Uuid, at: i64) -> sqlx::Result<Head> {
    sqlx::query_as!(
        Head,
        r#"UPDATE sessions SET cancel_requested = 1, version = version + 1, updated_at = ?2
           WHERE id = ?1
           RETURNING id AS "id!: Uuid", status AS "status!: String",
               next_step AS "next_step!: i64", final_answer AS "final_answer?: String",
               error_code AS "error_code?: String", error_message AS "error_message?: String",
               cancel_requested AS "cancel_requested!: bool", version AS "version!: i64",
               approval_expires_at AS "approval_expires_at?: i64",
               updated_at AS "updated_at!: i64", event_seq AS "event_seq!: i64""#,
        id,
        at,
    )
    .fetch_one(db)
    .await
}

/// A session an approval decision is made on, and whether its window had closed at `at`.
#[derive(Debug)]
pub struct ApprovalTarget {
    pub org_id: Uuid,
    pub status: String,
    pub next_step: i64,
    pub expired: bool,
    /// The request's `on_approval_timeout` (`fail` when it chose none).
    pub on_timeout: String,
}

pub async fn approval_target(
    db: impl SqliteExecutor<'_>,
    id: Uuid,
    at: i64,
) -> sqlx::Result<Option<ApprovalTarget>> {
    sqlx::query_as!(
        ApprovalTarget,
        r#"SELECT org_id AS "org_id: Uuid", status, next_step,
                  coalesce(approval_expires_at < ?2, 0) AS "expired!: bool",
                  coalesce(json_extract(request, '$.on_approval_timeout'), 'fail')
                      AS "on_timeout!: String"
           FROM sessions WHERE id = ?1"#,
        id,
        at,
    )
    .fetch_optional(db)
    .await
}

/// Records the decision on the step's calls unless one is recorded; when it is, the time of it.
pub async fn decide_step(
    db: impl SqliteExecutor<'_>,
    session_id: Uuid,
    step_index: i64,
    approval: &str,
    reason: Option<&str>,
    by: Option<Uuid>,
    at: i64,
) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar!(
        r#"UPDATE steps
           SET approval = ?3, approval_reason = ?4, approved_by = ?5, approved_at = ?6
           WHERE session_id = ?1 AND step_index = ?2 AND approval IS NULL
           RETURNING approved_at AS "approved_at!: i64""#,
        session_id,
        step_index,
        approval,
        reason,
        by,
        at,
    )
    .fetch_optional(db)
    .await
}

/// A session moved on (a queued one started, a held one resumed after a decision), and the
/// trace its steps join.
#[derive(Debug)]
pub struct Moved {
    pub head: Head,
    pub traceparent: Option<String>,
}

/// Puts the session back to `running`, taking two events' numbers (the decision's and the
/// status').
pub async fn resume(db: impl SqliteExecutor<'_>, id: Uuid, at: i64) -> sqlx::Result<Moved> {
    let row = sqlx::query!(
        r#"UPDATE sessions SET status = 'running', approval_expires_at = NULL,
               event_seq = event_seq + 2, version = version + 1, updated_at = ?2
           WHERE id = ?1
           RETURNING id AS "id!: Uuid", status AS "status!: String",
               next_step AS "next_step!: i64", final_answer AS "final_answer?: String",
               error_code AS "error_code?: String", error_message AS "error_message?: String",
               cancel_requested AS "cancel_requested!: bool", version AS "version!: i64",
               approval_expires_at AS "approval_expires_at?: i64",
               updated_at AS "updated_at!: i64", event_seq AS "event_seq!: i64",
               traceparent AS "traceparent?: String""#,
        id,
        at,
    )
    .fetch_one(db)
    .await?;
    Ok(Moved {
        head: Head {
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
            event_seq: row.event_seq,
        },
        traceparent: row.traceparent,
    })
}

/// One LLM call, as the ledger keeps it.
#[derive(Debug)]
pub struct LlmCall<'a> {
    pub session_id: Uuid,
    pub step_index: i64,
    pub model: &'a str,
    /// `ok` or `error`.
    pub outcome: &'a str,
    pub http_status: Option<i64>,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_write_tokens: i64,
    pub cache_write_1h_tokens: i64,
    /// Decimal text.
    pub cost_usd: Option<&'a str>,
    pub duration_ms: i64,
    pub error: Option<&'a str>,
    pub created_at: i64,
}

pub async fn insert_llm_call(db: impl SqliteExecutor<'_>, call: &LlmCall<'_>) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO llm_calls (session_id, step_index, model, outcome, http_status,
             input_tokens, output_tokens, cache_read_tokens, cache_write_tokens,
             cache_write_1h_tokens, cost_usd, duration_ms, error, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        call.session_id,
        call.step_index,
        call.model,
        call.outcome,
        call.http_status,
        call.input_tokens,
        call.output_tokens,
        call.cache_read_tokens,
        call.cache_write_tokens,
        call.cache_write_1h_tokens,
        call.cost_usd,
        call.duration_ms,
        call.error,
        call.created_at,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// A session as an org's listing shows it, with its step count.
#[derive(Debug)]
pub struct Listed {
    pub id: Uuid,
    pub status: String,
    pub model: String,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub steps: i64,
}

/// Where a listing starts: after the session created at `created_at` with id `id`.
#[derive(Debug, Clone, Copy)]
pub struct After {
    pub created_at: i64,
    pub id: Uuid,
}

/// The org's sessions (only those in `status`, when given), newest first, by keyset (creation
/// time, then id), at most `limit`.
pub async fn list(
    db: impl SqliteExecutor<'_>,
    org_id: Uuid,
    status: Option<&str>,
    after: Option<After>,
    limit: i64,
) -> sqlx::Result<Vec<Listed>> {
    let (after_at, after_id) = (after.map(|a| a.created_at), after.map(|a| a.id));
    sqlx::query_as!(
        Listed,
        r#"SELECT s.id AS "id!: Uuid", s.status, s.model, s.error_code, s.error_message,
                  s.created_at, s.updated_at,
                  (SELECT count(*) FROM steps st WHERE st.session_id = s.id) AS "steps!: i64"
           FROM sessions s
           WHERE s.org_id = ?1 AND (?2 IS NULL OR s.status = ?2)
             AND (?3 IS NULL OR s.created_at < ?3 OR (s.created_at = ?3 AND s.id < ?4))
           ORDER BY s.created_at DESC, s.id DESC
           LIMIT ?5"#,
        org_id,
        status,
        after_at,
        after_id,
        limit,
    )
    .fetch_all(db)
    .await
}
