//! The reconciler's statements: leadership, sessions nobody is moving, approvals that lapsed,
//! deadlines that passed. The database file is the truth, so the queue can always be rebuilt
//! from here. Each write runs in the caller's `BEGIN IMMEDIATE` transaction; where Postgres
//! inserts events from a CTE, the session rows are updated first and their events appended
//! after, with the JSON built in Rust.

use std::time::Duration;

use serde_json::Value;
use sqlx::{AssertSqlSafe, Row, SqliteConnection, SqlitePool};
use uuid::Uuid;

use super::super::error::StoreResult;
use super::super::model::{Head, Repair, Summary};
use super::rows::{self, HEAD, append_events, done_event, head, status, status_event};

/// How long the reconciler's leadership lasts unless renewed.
const LEADERSHIP_TTL: Duration = Duration::from_secs(10);

const APPROVAL_EXPIRED: (&str, &str) = (
    "approval_expired",
    "no one approved or rejected the pending tool call in time",
);
const DEADLINE_EXCEEDED: (&str, &str) = (
    "deadline_exceeded",
    "the session did not finish before its deadline",
);

/// A duration in stored units (microseconds), saturating.
fn span(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// Takes the reconciler's leadership if no one holds it, its holder let it lapse, or it is
/// already `holder`'s. True if `holder` now holds it.
pub(super) async fn take_leadership(pool: &SqlitePool, holder: &str) -> StoreResult<bool> {
    let now = super::now();
    let taken = sqlx::query(
        "INSERT INTO leadership (name, holder, until) VALUES ('reconciler', ?1, ?2)
         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until
         WHERE leadership.until < ?3 OR leadership.holder = excluded.holder",
    )
    .bind(holder)
    .bind(now.saturating_add(span(LEADERSHIP_TTL)))
    .bind(now)
    .execute(pool)
    .await?;
    Ok(taken.rows_affected() > 0)
}

/// Extends the leadership if `holder` still holds it; false if another took it over.
pub(super) async fn renew_leadership(pool: &SqlitePool, holder: &str) -> StoreResult<bool> {
    let renewed =
        sqlx::query("UPDATE leadership SET until = ?2 WHERE name = 'reconciler' AND holder = ?1")
            .bind(holder)
            .bind(super::now().saturating_add(span(LEADERSHIP_TTL)))
            .execute(pool)
            .await?;
    Ok(renewed.rows_affected() > 0)
}

/// Claims up to `limit` unfinished sessions (not awaiting a human) with no live lease and no
/// change (nor repair) for `idle`. Claiming bumps the fence, so a stale holder can no longer
/// write, and sets `repaired_at`, so the session isn't claimed again before another `idle`;
/// nothing a poll shows changes.
pub(super) async fn claim_stalled(
    conn: &mut SqliteConnection,
    idle: Duration,
    limit: i64,
) -> StoreResult<Vec<Repair>> {
    let now = super::now();
    let rows = sqlx::query(
        "UPDATE sessions SET fence = fence + 1, repaired_at = ?1
         WHERE id IN (
             SELECT id FROM sessions
             WHERE status IN ('pending', 'running')
               AND (lease_until IS NULL OR lease_until < ?1)
               AND updated_at < ?2
               AND (repaired_at IS NULL OR repaired_at < ?2)
             ORDER BY updated_at LIMIT ?3)
         RETURNING id, next_step, fence, traceparent",
    )
    .bind(now)
    .bind(now.saturating_sub(span(idle)))
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(Repair {
                session_id: row.try_get("id")?,
                next_step: row.try_get::<i64, _>("next_step")?.max(0) as u32,
                fence: row.try_get("fence")?,
                traceparent: row.try_get("traceparent")?,
            })
        })
        .collect()
}

/// Fails the sessions `filter` picks (an SQL condition; `?1` is now, `?4` the optional `id`)
/// with `code` and `message`, and appends to each a `status` and a `done` event.
async fn fail(
    conn: &mut SqliteConnection,
    filter: &str,
    id: Option<Uuid>,
    (code, message): (&str, &str),
) -> StoreResult<Vec<Head>> {
    let now = super::now();
    let mut query = sqlx::query(AssertSqlSafe(format!(
        "UPDATE sessions SET status = 'failed', error_code = ?2, error_message = ?3,
             approval_expires_at = NULL, event_seq = event_seq + 2,
             version = version + 1, updated_at = ?1
         WHERE {filter}
         RETURNING {HEAD}, event_seq"
    )))
    .bind(now)
    .bind(code)
    .bind(message);
    if let Some(id) = id {
        query = query.bind(id);
    }
    let rows = query.fetch_all(&mut *conn).await?;
    let mut heads = Vec::with_capacity(rows.len());
    for row in &rows {
        let head = head(row)?;
        let seq: i64 = row.try_get("event_seq")?;
        let totals = rows::totals(conn, head.id).await?;
        let mut done = done_event(&head, totals);
        // As on Postgres: a failed session's `done` carries no answer.
        done["final_answer"] = Value::Null;
        let status = status_event(&head);
        append_events(
            conn,
            head.id,
            seq - 1,
            &[("status", &status), ("done", &done)],
            now,
        )
        .await?;
        heads.push(head);
    }
    Ok(heads)
}

/// Fails every session whose approval window closed.
pub(super) async fn expire_lapsed_approvals(conn: &mut SqliteConnection) -> StoreResult<Vec<Head>> {
    fail(
        conn,
        "status = 'awaiting_approval' AND approval_expires_at < ?1",
        None,
        APPROVAL_EXPIRED,
    )
    .await
}

/// Fails one session whose approval window closed (an approval that came too late).
pub(super) async fn expire_one(conn: &mut SqliteConnection, id: Uuid) -> StoreResult<Option<Head>> {
    let heads = fail(
        conn,
        "id = ?4 AND status = 'awaiting_approval' AND approval_expires_at < ?1",
        Some(id),
        APPROVAL_EXPIRED,
    )
    .await?;
    Ok(heads.into_iter().next())
}

/// Fails every unfinished session past its deadline that no worker holds. (A worker holding one
/// stops it itself when the deadline passes.)
pub(super) async fn fail_overdue(conn: &mut SqliteConnection) -> StoreResult<Vec<Head>> {
    fail(
        conn,
        "status IN ('pending', 'running', 'awaiting_approval') AND deadline_at < ?1
           AND (lease_until IS NULL OR lease_until < ?1)",
        None,
        DEADLINE_EXCEEDED,
    )
    .await
}

/// Forgets idempotency keys older than `keep`.
pub(super) async fn forget_idempotency_keys(pool: &SqlitePool, keep: Duration) -> StoreResult<u64> {
    let deleted = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < ?1")
        .bind(super::now().saturating_sub(span(keep)))
        .execute(pool)
        .await?;
    Ok(deleted.rows_affected())
}

/// Sessions by status (in status order, as Postgres's JSON object gives them) and steps, counted.
pub(super) async fn summary(pool: &SqlitePool) -> StoreResult<Summary> {
    let by_status: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM sessions GROUP BY status ORDER BY status")
            .fetch_all(pool)
            .await?;
    let (steps, finished): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM steps),
                (SELECT count(*) FROM steps WHERE finished_at IS NOT NULL)",
    )
    .fetch_one(pool)
    .await?;
    Ok(Summary {
        sessions_by_status: by_status
            .into_iter()
            .map(|(s, n)| Ok((status(&s)?, n.max(0) as u64)))
            .collect::<StoreResult<_>>()?,
        steps: steps.max(0) as u64,
        steps_finished: finished.max(0) as u64,
    })
}

/// Sessions not yet finished; the partial index `sessions_unfinished` holds just these.
pub(super) async fn unfinished(pool: &SqlitePool) -> StoreResult<u64> {
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sessions WHERE status IN ('pending', 'running', 'awaiting_approval')",
    )
    .fetch_one(pool)
    .await?;
    Ok(n.max(0) as u64)
}

/// The worker (process and attempt) holding a live lease on the session, if any.
pub(super) async fn lease_holder(pool: &SqlitePool, id: Uuid) -> StoreResult<Option<String>> {
    Ok(sqlx::query_scalar::<_, Option<String>>(
        "SELECT lease_owner FROM sessions WHERE id = ?1 AND lease_until > ?2",
    )
    .bind(id)
    .bind(super::now())
    .fetch_optional(pool)
    .await?
    .flatten())
}
