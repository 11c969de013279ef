//! Webhooks on Postgres: an org's settings, claiming due deliveries (`FOR UPDATE SKIP LOCKED`, so
//! workers never claim the same one), fixing a body, recording attempts, and a session's list.
//! The deliveries themselves are written by the `session_events` trigger
//! (`migrations/20261203000004_webhooks.up.sql`).

use std::time::Duration;

use sqlx::PgPool;
use sqlx::types::Json;
use uuid::Uuid;

use super::super::error::StoreResult;
use super::super::model::{
    OrgWebhook, OrgWebhookChange, WebhookAttemptRecord, WebhookDue, WebhookNext,
};
use super::super::webhooks::{DeliveryRow, assemble, event_type};
use crate::schemas::{WebhookAttempt, WebhookDelivery, WebhookDeliveryState};

/// Changes an org's webhook settings; `None` when no org has that name.
pub(super) async fn configure(
    pool: &PgPool,
    org: &str,
    change: &OrgWebhookChange,
) -> StoreResult<Option<OrgWebhook>> {
    let row = sqlx::query!(
        r#"UPDATE orgs SET
               webhook_url = CASE WHEN $2 THEN $3 ELSE webhook_url END,
               webhook_secret = CASE WHEN $5 OR webhook_secret IS NULL THEN $4
                                     ELSE webhook_secret END
           WHERE name = $1
           RETURNING webhook_url, webhook_secret AS "secret!""#,
        org,
        change.url.is_some(),
        change.url.clone().flatten(),
        change.new_secret,
        change.rotate,
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|row| OrgWebhook {
        url: row.webhook_url,
        secret: row.secret,
    }))
}

/// The org's secret, made from `candidate` when it has none; the first one made wins.
pub(super) async fn secret(pool: &PgPool, org_id: Uuid, candidate: &str) -> StoreResult<String> {
    Ok(sqlx::query_scalar!(
        r#"UPDATE orgs SET webhook_secret = coalesce(webhook_secret, $2) WHERE id = $1
           RETURNING webhook_secret AS "secret!""#,
        org_id,
        candidate,
    )
    .fetch_one(pool)
    .await?)
}

/// Claims up to `limit` due deliveries: each takes its next attempt number and stays out of
/// the due list for `lease`.
pub(super) async fn claim(
    pool: &PgPool,
    limit: i64,
    lease: Duration,
) -> StoreResult<Vec<WebhookDue>> {
    let rows = sqlx::query!(
        r#"WITH due AS (
               SELECT session_id, event_seq FROM webhook_deliveries
               WHERE state = 'pending' AND next_attempt_at <= now()
               ORDER BY next_attempt_at
               LIMIT $1
               FOR UPDATE SKIP LOCKED
           ), claimed AS (
               UPDATE webhook_deliveries d SET attempts = d.attempts + 1,
                   next_attempt_at = now() + $2::float8 * interval '1 second'
               FROM due WHERE d.session_id = due.session_id AND d.event_seq = due.event_seq
               RETURNING d.session_id, d.event_seq, d.event_type, d.org_id, d.url, d.attempts,
                         d.payload
           )
           SELECT c.session_id AS "session_id!", c.event_seq AS "event_seq!",
                  c.event_type AS "event_type!", c.org_id AS "org_id!", c.url AS "url!",
                  c.attempts AS "attempts!", c.payload AS "payload: Json<serde_json::Value>",
                  o.webhook_secret AS "secret?"
           FROM claimed c LEFT JOIN orgs o ON o.id = c.org_id"#,
        limit,
        lease.as_secs_f64(),
    )
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|row| {
            Ok(WebhookDue {
                session_id: row.session_id,
                event_seq: row.event_seq,
                event_type: event_type(&row.event_type)?,
                org_id: row.org_id,
                url: row.url,
                attempt: row.attempts.max(0) as u32,
                payload: row.payload.map(|Json(payload)| payload),
                secret: row.secret,
            })
        })
        .collect()
}

/// Fixes the delivery's body unless it has one; returns the one kept.
pub(super) async fn fix_payload(
    pool: &PgPool,
    session_id: Uuid,
    event_seq: i64,
    payload: &serde_json::Value,
) -> StoreResult<serde_json::Value> {
    let kept = sqlx::query_scalar!(
        r#"UPDATE webhook_deliveries SET payload = coalesce(payload, $3)
           WHERE session_id = $1 AND event_seq = $2
           RETURNING payload AS "payload!: Json<serde_json::Value>""#,
        session_id,
        event_seq,
        Json(payload) as _,
    )
    .fetch_one(pool)
    .await?;
    Ok(kept.0)
}

/// Records the attempt; settles the delivery only if this attempt is still its latest claim.
pub(super) async fn record(pool: &PgPool, record: &WebhookAttemptRecord) -> StoreResult<()> {
    let (state, next_at) = match record.next {
        WebhookNext::Delivered => (WebhookDeliveryState::Delivered, None),
        WebhookNext::RetryAt(at) => (WebhookDeliveryState::Pending, Some(at)),
        WebhookNext::Failed => (WebhookDeliveryState::Failed, None),
    };
    sqlx::query!(
        r#"WITH attempt AS (
               INSERT INTO webhook_attempts (session_id, event_seq, attempt, at, status_code,
                                             error, duration_ms)
               VALUES ($1, $2, $3, $4, $5, $6, $7)
               ON CONFLICT DO NOTHING
           )
           UPDATE webhook_deliveries SET state = $8,
               next_attempt_at = coalesce($9, next_attempt_at),
               finished_at = CASE WHEN $8 = 'pending' THEN NULL ELSE now() END
           WHERE session_id = $1 AND event_seq = $2 AND attempts = $3 AND state = 'pending'"#,
        record.session_id,
        record.event_seq,
        record.attempt as i32,
        record.at,
        record.status_code.map(i32::from),
        record.error.as_deref(),
        i64::try_from(record.duration_ms).unwrap_or(i64::MAX),
        state.as_str(),
        next_at,
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// The session's deliveries, oldest first, each with its attempts.
pub(super) async fn list(pool: &PgPool, session_id: Uuid) -> StoreResult<Vec<WebhookDelivery>> {
    let deliveries = sqlx::query!(
        r#"SELECT event_seq, event_type, url, state, next_attempt_at, created_at, finished_at
           FROM webhook_deliveries WHERE session_id = $1 ORDER BY event_seq"#,
        session_id,
    )
    .fetch_all(pool)
    .await?;
    let attempts = sqlx::query!(
        r#"SELECT event_seq, attempt, at, status_code, error, duration_ms
           FROM webhook_attempts WHERE session_id = $1 ORDER BY event_seq, attempt"#,
        session_id,
    )
    .fetch_all(pool)
    .await?;
    let deliveries = deliveries
        .into_iter()
        .map(|row| DeliveryRow {
            event_seq: row.event_seq,
            event_type: row.event_type,
            url: row.url,
            state: row.state,
            next_attempt_at: row.next_attempt_at,
            created_at: row.created_at,
            finished_at: row.finished_at,
        })
        .collect();
    let attempts = attempts
        .into_iter()
        .map(|row| {
            let attempt = WebhookAttempt {
                attempt: row.attempt.max(0) as u32,
                at: row.at,
                status_code: row.status_code.and_then(|s| u16::try_from(s).ok()),
                error: row.error,
                duration_ms: row.duration_ms.max(0) as u64,
            };
            (row.event_seq, attempt)
        })
        .collect();
    assemble(session_id, deliveries, attempts)
}
