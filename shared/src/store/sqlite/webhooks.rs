//! Webhooks on SQLite: the same operations as on Postgres (`../postgres/webhooks.rs`). A claim
//! runs in the caller's `BEGIN IMMEDIATE` transaction, so two workers on one file never claim
//! the same delivery; an attempt and the delivery's new state are written together.

use std::time::Duration;

use agentq_sqlite::webhooks as stmt;
use sqlx::{SqliteConnection, SqlitePool};
use uuid::Uuid;

use super::super::error::{StoreError, StoreResult};
use super::super::model::{
    OrgWebhook, OrgWebhookChange, WebhookAttemptRecord, WebhookDue, WebhookNext,
};
use super::super::webhooks::{DeliveryRow, assemble, event_type};
use super::{encode, micros, now, time};
use crate::schemas::{WebhookAttempt, WebhookDelivery, WebhookDeliveryState};

pub(super) async fn configure(
    conn: &mut SqliteConnection,
    org: &str,
    change: &OrgWebhookChange,
) -> StoreResult<Option<OrgWebhook>> {
    let url = change.url.clone().flatten();
    let row = stmt::configure_org(
        conn,
        org,
        change.url.is_some(),
        url.as_deref(),
        &change.new_secret,
        change.rotate,
    )
    .await?;
    Ok(row.map(|row| OrgWebhook {
        url: row.url,
        secret: row.secret,
    }))
}

pub(super) async fn secret(
    conn: &mut SqliteConnection,
    org_id: Uuid,
    candidate: &str,
) -> StoreResult<String> {
    Ok(stmt::ensure_secret(conn, org_id, candidate).await?)
}

pub(super) async fn claim(
    conn: &mut SqliteConnection,
    limit: i64,
    lease: Duration,
) -> StoreResult<Vec<WebhookDue>> {
    let now = now();
    let lease = i64::try_from(lease.as_micros()).unwrap_or(i64::MAX);
    let rows = stmt::claim(conn, now, now.saturating_add(lease), limit).await?;
    rows.into_iter()
        .map(|row| {
            let payload = row
                .payload
                .map(|text| serde_json::from_str(&text))
                .transpose()
                .map_err(|e| StoreError::Backend(format!("a stored webhook body: {e}")))?;
            Ok(WebhookDue {
                session_id: row.session_id,
                event_seq: row.event_seq,
                event_type: event_type(&row.event_type)?,
                org_id: row.org_id,
                url: row.url,
                attempt: u32::try_from(row.attempts).unwrap_or(0),
                payload,
                secret: row.secret,
            })
        })
        .collect()
}

pub(super) async fn fix_payload(
    conn: &mut SqliteConnection,
    session_id: Uuid,
    event_seq: i64,
    payload: &serde_json::Value,
) -> StoreResult<serde_json::Value> {
    let text = serde_json::to_string(payload).map_err(encode)?;
    let kept = stmt::fix_payload(conn, session_id, event_seq, &text).await?;
    serde_json::from_str(&kept)
        .map_err(|e| StoreError::Backend(format!("a stored webhook body: {e}")))
}

pub(super) async fn record(
    conn: &mut SqliteConnection,
    record: &WebhookAttemptRecord,
) -> StoreResult<()> {
    let (state, next_at) = match record.next {
        WebhookNext::Delivered => (WebhookDeliveryState::Delivered, None),
        WebhookNext::RetryAt(at) => (WebhookDeliveryState::Pending, Some(micros(at))),
        WebhookNext::Failed => (WebhookDeliveryState::Failed, None),
    };
    let attempt = i64::from(record.attempt);
    stmt::insert_attempt(
        &mut *conn,
        &stmt::Attempt {
            session_id: record.session_id,
            event_seq: record.event_seq,
            attempt,
            at: micros(record.at),
            status_code: record.status_code.map(i64::from),
            error: record.error.as_deref(),
            duration_ms: i64::try_from(record.duration_ms).unwrap_or(i64::MAX),
        },
    )
    .await?;
    stmt::settle(
        conn,
        record.session_id,
        record.event_seq,
        attempt,
        state.as_str(),
        next_at,
        now(),
    )
    .await?;
    Ok(())
}

pub(super) async fn list(pool: &SqlitePool, session_id: Uuid) -> StoreResult<Vec<WebhookDelivery>> {
    let deliveries = stmt::deliveries(pool, session_id)
        .await?
        .into_iter()
        .map(|row| DeliveryRow {
            event_seq: row.event_seq,
            event_type: row.event_type,
            url: row.url,
            state: row.state,
            next_attempt_at: time(row.next_attempt_at),
            created_at: time(row.created_at),
            finished_at: row.finished_at.map(time),
        })
        .collect();
    let attempts = stmt::attempts(pool, session_id)
        .await?
        .into_iter()
        .map(|row| {
            let attempt = WebhookAttempt {
                attempt: u32::try_from(row.attempt).unwrap_or(0),
                at: time(row.at),
                status_code: row.status_code.and_then(|s| u16::try_from(s).ok()),
                error: row.error,
                duration_ms: u64::try_from(row.duration_ms).unwrap_or(0),
            };
            (row.event_seq, attempt)
        })
        .collect();
    assemble(session_id, deliveries, attempts)
}
