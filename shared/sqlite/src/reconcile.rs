//! The reconciler's statements: leadership, sessions nobody is moving, approvals that lapsed,
//! deadlines that passed, and the counts the admin summary shows. The three failing statements
//! differ only in the sessions they pick; each is written out, so each is checked (and planned)
//! as it runs.

use sqlx::SqliteExecutor;
use uuid::Uuid;

use crate::Head;

/// Takes the reconciler's leadership until `until` for `holder` if no one holds it, its holder
/// let it lapse before `now`, or it is already `holder`'s; the number of rows changed.
pub async fn take_leadership(
    db: impl SqliteExecutor<'_>,
    holder: &str,
    until: i64,
    now: i64,
) -> sqlx::Result<u64> {
    let taken = sqlx::query!(
        "INSERT INTO leadership (name, holder, until) VALUES ('reconciler', ?1, ?2)
         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until
         WHERE leadership.until < ?3 OR leadership.holder = excluded.holder",
        holder,
        until,
        now,
    )
    .execute(db)
    .await?;
    Ok(taken.rows_affected())
}

/// Extends the leadership to `until` if `holder` still holds it; the number of rows changed.
pub async fn renew_leadership(
    db: impl SqliteExecutor<'_>,
    holder: &str,
    until: i64,
) -> sqlx::Result<u64> {
    let renewed = sqlx::query!(
        "UPDATE leadership SET until = ?2 WHERE name = 'reconciler' AND holder = ?1",
        holder,
        until,
    )
    .execute(db)
    .await?;
    Ok(renewed.rows_affected())
}

/// A session claimed for repair.
#[derive(Debug)]
pub struct Stalled {
    pub id: Uuid,
    pub next_step: i64,
    pub fence: i64,
    pub traceparent: Option<String>,
}

/// Claims up to `limit` unfinished sessions (not awaiting a human) with no live lease at `now`
/// and no change (nor repair) since `idle_since`: bumps their fence and sets `repaired_at`.
pub async fn claim_stalled(
    db: impl SqliteExecutor<'_>,
    now: i64,
    idle_since: i64,
    limit: i64,
) -> sqlx::Result<Vec<Stalled>> {
    sqlx::query_as!(
        Stalled,
        r#"UPDATE sessions SET fence = fence + 1, repaired_at = ?1
           WHERE id IN (
               SELECT id FROM sessions
               WHERE status IN ('pending', 'running')
                 AND (lease_until IS NULL OR lease_until < ?1)
                 AND updated_at < ?2
                 AND (repaired_at IS NULL OR repaired_at < ?2)
               ORDER BY updated_at LIMIT ?3)
           RETURNING id AS "id!: Uuid", next_step AS "next_step!: i64", fence AS "fence!: i64",
               traceparent AS "traceparent?: String""#,
        now,
        idle_since,
        limit,
    )
    .fetch_all(db)
    .await
}

/// Fails every session whose approval window closed before `now` with `code` and `message`,
/// taking two events' numbers for each (the status' and `done`'s).
pub async fn fail_lapsed_approvals(
    db: impl SqliteExecutor<'_>,
    now: i64,
    code: &str,
    message: &str,
) -> sqlx::Result<Vec<Head>> {
    sqlx::query_as!(
        Head,
        r#"UPDATE sessions SET status = 'failed', error_code = ?2, error_message = ?3,
               approval_expires_at = NULL, event_seq = event_seq + 2,
               version = version + 1, updated_at = ?1
           WHERE status = 'awaiting_approval' AND approval_expires_at < ?1
              AND coalesce(json_extract(request, '$.on_approval_timeout'), 'fail') = 'fail'
           RETURNING id AS "id!: Uuid", status AS "status!: String",
               next_step AS "next_step!: i64", final_answer AS "final_answer?: String",
               error_code AS "error_code?: String", error_message AS "error_message?: String",
               cancel_requested AS "cancel_requested!: bool", version AS "version!: i64",
               approval_expires_at AS "approval_expires_at?: i64",
               updated_at AS "updated_at!: i64", event_seq AS "event_seq!: i64""#,
        now,
        code,
        message,
    )
    .fetch_all(db)
    .await
}

/// [`fail_lapsed_approvals`] for the one session `id` (an approval that came too late).
pub async fn fail_lapsed_approval(
    db: impl SqliteExecutor<'_>,
    now: i64,
    code: &str,
    message: &str,
    id: Uuid,
) -> sqlx::Result<Vec<Head>> {
    sqlx::query_as!(
        Head,
        r#"UPDATE sessions SET status = 'failed', error_code = ?2, error_message = ?3,
               approval_expires_at = NULL, event_seq = event_seq + 2,
               version = version + 1, updated_at = ?1
           WHERE id = ?4 AND status = 'awaiting_approval' AND approval_expires_at < ?1
             AND coalesce(json_extract(request, '$.on_approval_timeout'), 'fail') = 'fail'
           RETURNING id AS "id!: Uuid", status AS "status!: String",
               next_step AS "next_step!: i64", final_answer AS "final_answer?: String",
               error_code AS "error_code?: String", error_message AS "error_message?: String",
               cancel_requested AS "cancel_requested!: bool", version AS "version!: i64",
               approval_expires_at AS "approval_expires_at?: i64",
               updated_at AS "updated_at!: i64", event_seq AS "event_seq!: i64""#,
        now,
        code,
        message,
        id,
    )
    .fetch_all(db)
    .await
}

/// Fails every unfinished session past its deadline at `now` that no worker holds, as
/// [`fail_lapsed_approvals`] does.
/// A held turn whose window closed and whose session asked for `reject` or `approve` then.
pub struct Lapsed {
    pub id: Uuid,
    pub org_id: Uuid,
    pub next_step: i64,
    pub on_timeout: String,
}

/// Up to `limit` sessions awaiting approval past `now` whose request chose `reject` or
/// `approve` for that case.
pub async fn lapsed_approvals(
    db: impl SqliteExecutor<'_>,
    now: i64,
    limit: i64,
) -> sqlx::Result<Vec<Lapsed>> {
    sqlx::query_as!(
        Lapsed,
        r#"SELECT id AS "id!: Uuid", org_id AS "org_id!: Uuid", next_step,
                  json_extract(request, '$.on_approval_timeout') AS "on_timeout!: String"
           FROM sessions
           WHERE status = 'awaiting_approval' AND approval_expires_at < ?1
             AND json_extract(request, '$.on_approval_timeout') IN ('reject', 'approve')
           ORDER BY approval_expires_at LIMIT ?2"#,
        now,
        limit,
    )
    .fetch_all(db)
    .await
}

pub async fn fail_overdue(
    db: impl SqliteExecutor<'_>,
    now: i64,
    code: &str,
    message: &str,
) -> sqlx::Result<Vec<Head>> {
    sqlx::query_as!(
        Head,
        r#"UPDATE sessions SET status = 'failed', error_code = ?2, error_message = ?3,
               approval_expires_at = NULL, event_seq = event_seq + 2,
               version = version + 1, updated_at = ?1
           WHERE status IN ('queued', 'pending', 'running', 'awaiting_approval')
             AND deadline_at < ?1
             AND (lease_until IS NULL OR lease_until < ?1)
           RETURNING id AS "id!: Uuid", status AS "status!: String",
               next_step AS "next_step!: i64", final_answer AS "final_answer?: String",
               error_code AS "error_code?: String", error_message AS "error_message?: String",
               cancel_requested AS "cancel_requested!: bool", version AS "version!: i64",
               approval_expires_at AS "approval_expires_at?: i64",
               updated_at AS "updated_at!: i64", event_seq AS "event_seq!: i64""#,
        now,
        code,
        message,
    )
    .fetch_all(db)
    .await
}

/// Forgets idempotency keys made before `before`; how many.
pub async fn forget_idempotency_keys(
    db: impl SqliteExecutor<'_>,
    before: i64,
) -> sqlx::Result<u64> {
    let deleted = sqlx::query!("DELETE FROM idempotency_keys WHERE created_at < ?1", before)
        .execute(db)
        .await?;
    Ok(deleted.rows_affected())
}

/// How many sessions are in one status.
#[derive(Debug)]
pub struct StatusCount {
    pub status: String,
    pub sessions: i64,
}

/// Sessions counted by status, in status order.
pub async fn sessions_by_status(db: impl SqliteExecutor<'_>) -> sqlx::Result<Vec<StatusCount>> {
    sqlx::query_as!(
        StatusCount,
        r#"SELECT status, count(*) AS "sessions!: i64"
           FROM sessions GROUP BY status ORDER BY status"#,
    )
    .fetch_all(db)
    .await
}

/// Steps stored, and how many of them finished.
#[derive(Debug)]
pub struct StepCounts {
    pub steps: i64,
    pub finished: i64,
}

pub async fn step_counts(db: impl SqliteExecutor<'_>) -> sqlx::Result<StepCounts> {
    sqlx::query_as!(
        StepCounts,
        r#"SELECT (SELECT count(*) FROM steps) AS "steps!: i64",
                  (SELECT count(*) FROM steps WHERE finished_at IS NOT NULL) AS "finished!: i64""#,
    )
    .fetch_one(db)
    .await
}

/// Sessions not yet finished; the partial index `sessions_unfinished` holds just these.
pub async fn unfinished(db: impl SqliteExecutor<'_>) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "unfinished!: i64" FROM sessions
           WHERE status IN ('queued', 'pending', 'running', 'awaiting_approval')"#,
    )
    .fetch_one(db)
    .await
}

/// The owner of a lease on the session live at `now`, if any.
pub async fn lease_holder(
    db: impl SqliteExecutor<'_>,
    id: Uuid,
    now: i64,
) -> sqlx::Result<Option<String>> {
    let holder = sqlx::query_scalar!(
        r#"SELECT lease_owner AS "lease_owner?: String" FROM sessions
           WHERE id = ?1 AND lease_until > ?2"#,
        id,
        now,
    )
    .fetch_optional(db)
    .await?;
    Ok(holder.flatten())
}
