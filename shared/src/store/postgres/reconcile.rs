//! The reconciler's statements: leadership, sessions nobody is moving, approvals that lapsed,
//! deadlines that passed. Postgres is the truth, so the queue can always be rebuilt from here.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::pool::PoolConnection;
use sqlx::types::Json;
use uuid::Uuid;

use super::super::error::StoreResult;
use super::super::model::{Head, LapsedApproval, Repair, Summary};
use super::rows::{HeadRow, status};

/// Any fixed 64-bit number, the same in every worker ("agentqrc").
const ADVISORY_LOCK: i64 = 0x6167_656e_7471_7263;

/// A connection holding the reconciler's advisory lock, or `None` if another process holds it.
/// The lock lasts as long as the connection: if its process dies, another takes over.
pub(super) async fn lead(pool: &PgPool) -> StoreResult<Option<PoolConnection<sqlx::Postgres>>> {
    let mut conn = pool.acquire().await?;
    let locked = sqlx::query_scalar!(
        r#"SELECT pg_try_advisory_lock($1) AS "locked!""#,
        ADVISORY_LOCK
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(locked.then_some(conn))
}

/// Claims up to `limit` unfinished sessions (not awaiting a human) with no live lease and no
/// change (nor repair) for `idle`. Claiming bumps the fence, so a stale holder can no longer
/// write, and sets `repaired_at`, so the session isn't claimed again before another `idle`;
/// nothing a poll shows changes.
pub(super) async fn claim_stalled(
    pool: &PgPool,
    idle: Duration,
    limit: i64,
) -> StoreResult<Vec<Repair>> {
    let rows = sqlx::query!(
        "UPDATE sessions SET fence = fence + 1, repaired_at = now()
         WHERE id IN (
             SELECT id FROM sessions
             WHERE status IN ('pending', 'running')
               AND (lease_until IS NULL OR lease_until < now())
               AND updated_at < now() - make_interval(secs => $1)
               AND (repaired_at IS NULL OR repaired_at < now() - make_interval(secs => $1))
             ORDER BY updated_at LIMIT $2
             FOR UPDATE SKIP LOCKED)
         RETURNING id, next_step, fence, traceparent",
        idle.as_secs_f64(),
        limit,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| Repair {
            session_id: row.id,
            next_step: row.next_step.max(0) as u32,
            fence: row.fence,
            traceparent: row.traceparent,
        })
        .collect())
}

/// Fails every session whose approval window closed.
pub(super) async fn expire_lapsed_approvals(pool: &PgPool) -> StoreResult<Vec<Head>> {
    let rows = sqlx::query_as!(
        HeadRow,
        r#"WITH head AS (
               UPDATE sessions SET status = 'failed', error_code = 'approval_expired',
                   error_message = 'no one approved or rejected the pending tool call in time',
                   approval_expires_at = NULL, event_seq = event_seq + 2,
                   version = version + 1, updated_at = now()
               WHERE status = 'awaiting_approval' AND approval_expires_at < now()
                 AND coalesce(request->>'on_approval_timeout', 'fail') = 'fail'
               RETURNING id, status, next_step, final_answer, error_code, error_message,
                         cancel_requested, version, approval_expires_at, updated_at, event_seq
           ), events AS (
               INSERT INTO session_events (session_id, seq, kind, data)
               SELECT id, event_seq - 1, 'status', jsonb_build_object('status', 'failed',
                   'error', jsonb_build_object('code', error_code, 'message', error_message))
               FROM head
               UNION ALL
               SELECT id, event_seq, 'done', jsonb_build_object('status', 'failed',
                   'final_answer', NULL,
                   'error', jsonb_build_object('code', error_code, 'message', error_message),
                   'totals', agentq_totals_json(id))
               FROM head
           )
           SELECT id AS "id!", status AS "status!", next_step AS "next_step!", final_answer,
                  error_code, error_message, cancel_requested AS "cancel_requested!",
                  version AS "version!", approval_expires_at, updated_at AS "updated_at!"
           FROM head"#,
    )
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(HeadRow::head).collect()
}

/// Up to `limit` sessions awaiting approval past their window whose request chose `reject` or
/// `approve` for that case.
pub(super) async fn lapsed_approvals(
    pool: &PgPool,
    limit: i64,
) -> StoreResult<Vec<LapsedApproval>> {
    let rows = sqlx::query!(
        r#"SELECT id, org_id, next_step, request->>'on_approval_timeout' AS "on_timeout!"
           FROM sessions
           WHERE status = 'awaiting_approval' AND approval_expires_at < now()
             AND request->>'on_approval_timeout' IN ('reject', 'approve')
           ORDER BY approval_expires_at LIMIT $1"#,
        limit,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            LapsedApproval::from_columns(r.id, r.org_id, i64::from(r.next_step), &r.on_timeout)
        })
        .collect())
}

/// Fails one session whose approval window closed (an approval that came too late).
pub(super) async fn expire_one(pool: &PgPool, id: Uuid) -> StoreResult<Option<Head>> {
    let row = sqlx::query_as!(
        HeadRow,
        r#"WITH head AS (
               UPDATE sessions SET status = 'failed', error_code = 'approval_expired',
                   error_message = 'no one approved or rejected the pending tool call in time',
                   approval_expires_at = NULL, event_seq = event_seq + 2,
                   version = version + 1, updated_at = now()
               WHERE id = $1 AND status = 'awaiting_approval' AND approval_expires_at < now()
                 AND coalesce(request->>'on_approval_timeout', 'fail') = 'fail'
               RETURNING id, status, next_step, final_answer, error_code, error_message,
                         cancel_requested, version, approval_expires_at, updated_at, event_seq
           ), events AS (
               INSERT INTO session_events (session_id, seq, kind, data)
               SELECT id, event_seq - 1, 'status', jsonb_build_object('status', 'failed',
                   'error', jsonb_build_object('code', error_code, 'message', error_message))
               FROM head
               UNION ALL
               SELECT id, event_seq, 'done', jsonb_build_object('status', 'failed',
                   'final_answer', NULL,
                   'error', jsonb_build_object('code', error_code, 'message', error_message),
                   'totals', agentq_totals_json(id))
               FROM head
           )
           SELECT id AS "id!", status AS "status!", next_step AS "next_step!", final_answer,
                  error_code, error_message, cancel_requested AS "cancel_requested!",
                  version AS "version!", approval_expires_at, updated_at AS "updated_at!"
           FROM head"#,
        id,
    )
    .fetch_optional(pool)
    .await?;
    row.map(HeadRow::head).transpose()
}

/// Fails every unfinished session past its deadline that no worker holds. (A worker holding one
/// stops it itself when the deadline passes.)
pub(super) async fn fail_overdue(pool: &PgPool) -> StoreResult<Vec<Head>> {
    let rows = sqlx::query_as!(
        HeadRow,
        r#"WITH head AS (
               UPDATE sessions SET status = 'failed', error_code = 'deadline_exceeded',
                   error_message = 'the session did not finish before its deadline',
                   approval_expires_at = NULL, event_seq = event_seq + 2,
                   version = version + 1, updated_at = now()
               WHERE status IN ('queued', 'pending', 'running', 'awaiting_approval')
                 AND deadline_at < now()
                 AND (lease_until IS NULL OR lease_until < now())
               RETURNING id, status, next_step, final_answer, error_code, error_message,
                         cancel_requested, version, approval_expires_at, updated_at, event_seq
           ), events AS (
               INSERT INTO session_events (session_id, seq, kind, data)
               SELECT id, event_seq - 1, 'status', jsonb_build_object('status', 'failed',
                   'error', jsonb_build_object('code', error_code, 'message', error_message))
               FROM head
               UNION ALL
               SELECT id, event_seq, 'done', jsonb_build_object('status', 'failed',
                   'final_answer', NULL,
                   'error', jsonb_build_object('code', error_code, 'message', error_message),
                   'totals', agentq_totals_json(id))
               FROM head
           )
           SELECT id AS "id!", status AS "status!", next_step AS "next_step!", final_answer,
                  error_code, error_message, cancel_requested AS "cancel_requested!",
                  version AS "version!", approval_expires_at, updated_at AS "updated_at!"
           FROM head"#,
    )
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(HeadRow::head).collect()
}

/// Forgets idempotency keys older than `keep`.
pub(super) async fn forget_idempotency_keys(pool: &PgPool, keep: Duration) -> StoreResult<u64> {
    let deleted = sqlx::query!(
        "DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(secs => $1)",
        keep.as_secs_f64(),
    )
    .execute(pool)
    .await?;
    Ok(deleted.rows_affected())
}

type StatusCounts = std::collections::BTreeMap<String, u64>;

/// Sessions by status and steps, counted.
pub(super) async fn summary(pool: &PgPool) -> StoreResult<Summary> {
    let row = sqlx::query!(
        r#"SELECT (SELECT coalesce(jsonb_object_agg(status, n), '{}'::jsonb)
                   FROM (SELECT status, count(*) AS n FROM sessions GROUP BY status) s)
                      AS "by_status!: Json<StatusCounts>",
                  (SELECT count(*) FROM steps) AS "steps!",
                  (SELECT count(*) FROM steps WHERE finished_at IS NOT NULL) AS "finished!""#
    )
    .fetch_one(pool)
    .await?;
    Ok(Summary {
        sessions_by_status: row
            .by_status
            .0
            .into_iter()
            .map(|(s, n)| Ok((status(&s)?, n)))
            .collect::<StoreResult<_>>()?,
        steps: row.steps.max(0) as u64,
        steps_finished: row.finished.max(0) as u64,
    })
}

/// Sessions not yet finished; the partial index `sessions_unfinished` holds just these.
pub(super) async fn unfinished(pool: &PgPool) -> StoreResult<u64> {
    let n = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM sessions
           WHERE status IN ('queued', 'pending', 'running', 'awaiting_approval')"#
    )
    .fetch_one(pool)
    .await?;
    Ok(n.max(0) as u64)
}

/// The worker (process and attempt) holding a live lease on the session, if any.
pub(super) async fn lease_holder(pool: &PgPool, id: Uuid) -> StoreResult<Option<String>> {
    Ok(sqlx::query_scalar!(
        "SELECT lease_owner FROM sessions WHERE id = $1 AND lease_until > now()",
        id
    )
    .fetch_optional(pool)
    .await?
    .flatten())
}

/// A database name that needs no quoting.
fn plain_name(name: &str) -> StoreResult<&str> {
    let plain = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        Ok(name)
    } else {
        Err(super::super::error::StoreError::Conflict(format!(
            "{name:?} is not a plain database name (lower-case letters, digits, _)"
        )))
    }
}

pub(super) async fn create_database(pool: &PgPool, name: &str) -> StoreResult<()> {
    let sql = format!("CREATE DATABASE {}", plain_name(name)?);
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(pool)
        .await?;
    Ok(())
}

pub(super) async fn drop_database(pool: &PgPool, name: &str) -> StoreResult<()> {
    let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", plain_name(name)?);
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(pool)
        .await?;
    Ok(())
}

pub(super) async fn transactions_committed(pool: &PgPool) -> StoreResult<u64> {
    let committed = sqlx::query_scalar!(
        r#"SELECT xact_commit AS "committed!" FROM pg_stat_database WHERE datname = current_database()"#
    )
    .fetch_one(pool)
    .await?;
    Ok(committed.max(0) as u64)
}
