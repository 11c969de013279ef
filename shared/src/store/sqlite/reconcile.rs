//! The reconciler's operations on SQLite: leadership, sessions nobody is moving, approvals that
//! lapsed, deadlines that passed. The database file is the truth, so the queue can always be
//! rebuilt from here. Each write runs in the caller's `BEGIN IMMEDIATE` transaction; where
//! Postgres inserts events from a CTE, the session rows are updated first and their events
//! appended after, with the JSON built in Rust.

use std::time::Duration;

use agentq_sqlite::{self as sql, reconcile as stmt};
use serde_json::Value;
use sqlx::{SqliteConnection, SqlitePool};
use uuid::Uuid;

use super::super::error::StoreResult;
use super::super::model::{Head, LapsedApproval, Repair, Summary};
use super::rows::{self, append_events, done_event, head, status, status_event};

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
    let until = now.saturating_add(span(LEADERSHIP_TTL));
    Ok(stmt::take_leadership(pool, holder, until, now).await? > 0)
}

/// Extends the leadership if `holder` still holds it; false if another took it over.
pub(super) async fn renew_leadership(pool: &SqlitePool, holder: &str) -> StoreResult<bool> {
    let until = super::now().saturating_add(span(LEADERSHIP_TTL));
    Ok(stmt::renew_leadership(pool, holder, until).await? > 0)
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
    let claimed = stmt::claim_stalled(conn, now, now.saturating_sub(span(idle)), limit).await?;
    Ok(claimed
        .into_iter()
        .map(|row| Repair {
            session_id: row.id,
            next_step: row.next_step.max(0) as u32,
            fence: row.fence,
            traceparent: row.traceparent,
        })
        .collect())
}

/// Appends to each session just failed at `now` a `status` and a `done` event.
async fn announce_failures(
    conn: &mut SqliteConnection,
    failed: Vec<sql::Head>,
    now: i64,
) -> StoreResult<Vec<Head>> {
    let mut heads = Vec::with_capacity(failed.len());
    for row in failed {
        let (head, seq) = head(row)?;
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
    let now = super::now();
    let (code, message) = APPROVAL_EXPIRED;
    let failed = stmt::fail_lapsed_approvals(&mut *conn, now, code, message).await?;
    announce_failures(conn, failed, now).await
}

/// Up to `limit` held turns past their window whose session chose `reject` or `approve`.
pub(super) async fn lapsed_approvals(
    pool: &SqlitePool,
    limit: i64,
) -> StoreResult<Vec<LapsedApproval>> {
    let rows = stmt::lapsed_approvals(pool, super::now(), limit).await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| LapsedApproval::from_columns(r.id, r.org_id, r.next_step, &r.on_timeout))
        .collect())
}

/// Fails one session whose approval window closed (an approval that came too late).
pub(super) async fn expire_one(conn: &mut SqliteConnection, id: Uuid) -> StoreResult<Option<Head>> {
    let now = super::now();
    let (code, message) = APPROVAL_EXPIRED;
    let failed = stmt::fail_lapsed_approval(&mut *conn, now, code, message, id).await?;
    let heads = announce_failures(conn, failed, now).await?;
    Ok(heads.into_iter().next())
}

/// Fails every unfinished session past its deadline that no worker holds. (A worker holding one
/// stops it itself when the deadline passes.)
pub(super) async fn fail_overdue(conn: &mut SqliteConnection) -> StoreResult<Vec<Head>> {
    let now = super::now();
    let (code, message) = DEADLINE_EXCEEDED;
    let failed = stmt::fail_overdue(&mut *conn, now, code, message).await?;
    announce_failures(conn, failed, now).await
}

/// Forgets idempotency keys older than `keep`.
pub(super) async fn forget_idempotency_keys(pool: &SqlitePool, keep: Duration) -> StoreResult<u64> {
    let before = super::now().saturating_sub(span(keep));
    Ok(stmt::forget_idempotency_keys(pool, before).await?)
}

/// Sessions by status (in status order, as Postgres's JSON object gives them) and steps, counted.
pub(super) async fn summary(pool: &SqlitePool) -> StoreResult<Summary> {
    let by_status = stmt::sessions_by_status(pool).await?;
    let steps = stmt::step_counts(pool).await?;
    Ok(Summary {
        sessions_by_status: by_status
            .into_iter()
            .map(|row| Ok((status(&row.status)?, row.sessions.max(0) as u64)))
            .collect::<StoreResult<_>>()?,
        steps: steps.steps.max(0) as u64,
        steps_finished: steps.finished.max(0) as u64,
    })
}

/// Sessions not yet finished; the partial index `sessions_unfinished` holds just these.
pub(super) async fn unfinished(pool: &SqlitePool) -> StoreResult<u64> {
    Ok(stmt::unfinished(pool).await?.max(0) as u64)
}

/// The worker (process and attempt) holding a live lease on the session, if any.
pub(super) async fn lease_holder(pool: &SqlitePool, id: Uuid) -> StoreResult<Option<String>> {
    Ok(stmt::lease_holder(pool, id, super::now()).await?)
}
