//! What the webhook sender and the API ask of the store about webhooks: an org's settings,
//! claiming due messages, the body of a message (built once, from the event it announces, and
//! kept), the signing secret (made when first needed), recording attempts, a session's list.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::error::{StoreError, StoreResult};
use super::model::{OrgWebhook, OrgWebhookChange, WebhookAttemptRecord, WebhookDue};
use super::{Store, view};
use crate::schemas::{
    SessionError, SessionStatus, SessionSummary, Totals, WebhookAttempt, WebhookDelivery,
    WebhookDeliveryState, WebhookEvent, WebhookEventType,
};

impl Store {
    /// Sets (`Some(Some(url))`, checked by the caller) or clears (`Some(None)`) an org's default
    /// webhook URL, or leaves it (`None`); makes the org's signing secret if it has none, or a
    /// new one on `rotate`. `NotFound` when no org has that name.
    pub async fn configure_org_webhook(
        &self,
        org: &str,
        url: Option<Option<String>>,
        rotate: bool,
    ) -> StoreResult<OrgWebhook> {
        let change = OrgWebhookChange {
            url,
            new_secret: crate::webhooks::new_secret(),
            rotate,
        };
        self.durable
            .configure_org_webhook(org, &change)
            .await?
            .ok_or(StoreError::NotFound("org"))
    }

    /// Claims up to `limit` due webhook messages for one attempt each (see
    /// [`Durable::claim_webhooks`](super::Durable::claim_webhooks)).
    pub async fn claim_webhooks(
        &self,
        limit: i64,
        lease: Duration,
    ) -> StoreResult<Vec<WebhookDue>> {
        self.durable.claim_webhooks(limit, lease).await
    }

    /// The body of the message: the one an earlier attempt kept, or one built now from the
    /// event it announces and kept, so that every attempt sends the same bytes.
    pub async fn webhook_body(&self, due: &WebhookDue) -> StoreResult<serde_json::Value> {
        if let Some(payload) = &due.payload {
            return Ok(payload.clone());
        }
        let event = self.webhook_event(due).await?;
        let payload = serde_json::to_value(&event)
            .map_err(|e| StoreError::Backend(format!("cannot encode a webhook event: {e}")))?;
        self.durable
            .fix_webhook_payload(due.session_id, due.event_seq, &payload)
            .await
    }

    /// The message announcing event `due.event_seq`: its type and time, and the session as the
    /// listing shows it with the status and error the event carries (and, for an ending, the
    /// totals it carries).
    async fn webhook_event(&self, due: &WebhookDue) -> StoreResult<WebhookEvent> {
        let state = self
            .durable
            .load(due.session_id)
            .await?
            .ok_or(StoreError::NotFound("session"))?;
        let event = self
            .durable
            .events(due.session_id, due.event_seq - 1, 1)
            .await?
            .into_iter()
            .find(|e| e.seq == due.event_seq)
            .ok_or(StoreError::NotFound("session event"))?;
        let session = view::session(&state);
        let data = &event.data;
        let status = data["status"]
            .as_str()
            .and_then(SessionStatus::parse)
            .unwrap_or(session.status);
        let error = serde_json::from_value::<Option<SessionError>>(data["error"].clone())
            .unwrap_or_else(|_| session.error.clone());
        let totals = serde_json::from_value::<Totals>(data["totals"].clone())
            .unwrap_or_else(|_| session.totals.clone());
        Ok(WebhookEvent {
            event_type: due.event_type,
            timestamp: event.created_at,
            data: SessionSummary {
                session_id: session.session_id,
                status,
                model: session.model,
                steps: totals.steps,
                cost_usd: totals.cost_usd,
                error,
                created_at: session.created_at,
                updated_at: event.created_at,
            },
        })
    }

    /// The org's signing secret, made now if it has none yet.
    pub async fn webhook_secret(&self, due: &WebhookDue) -> StoreResult<String> {
        match &due.secret {
            Some(secret) => Ok(secret.clone()),
            None => {
                let candidate = crate::webhooks::new_secret();
                self.durable.webhook_secret(due.org_id, &candidate).await
            }
        }
    }

    /// Records an attempt and what follows it.
    pub async fn record_webhook_attempt(&self, record: &WebhookAttemptRecord) -> StoreResult<()> {
        self.durable.record_webhook_attempt(record).await
    }

    /// A session's webhook messages with their attempts, oldest first.
    pub async fn webhook_deliveries(&self, session_id: Uuid) -> StoreResult<Vec<WebhookDelivery>> {
        self.durable.webhook_deliveries(session_id).await
    }
}

/// A delivery as either back end reads it, before its attempts are attached.
pub(super) struct DeliveryRow {
    pub event_seq: i64,
    pub event_type: String,
    pub url: String,
    pub state: String,
    pub next_attempt_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// The deliveries with their attempts (`(event_seq, attempt)` pairs, in order).
pub(super) fn assemble(
    session_id: Uuid,
    deliveries: Vec<DeliveryRow>,
    attempts: Vec<(i64, WebhookAttempt)>,
) -> StoreResult<Vec<WebhookDelivery>> {
    let mut by_event: BTreeMap<i64, Vec<WebhookAttempt>> = BTreeMap::new();
    for (seq, attempt) in attempts {
        by_event.entry(seq).or_default().push(attempt);
    }
    deliveries
        .into_iter()
        .map(|row| {
            let state = delivery_state(&row.state)?;
            Ok(WebhookDelivery {
                webhook_id: crate::webhooks::message_id(session_id, row.event_seq),
                event_type: event_type(&row.event_type)?,
                event_seq: row.event_seq,
                url: row.url,
                state,
                next_attempt_at: (state == WebhookDeliveryState::Pending)
                    .then_some(row.next_attempt_at),
                created_at: row.created_at,
                finished_at: row.finished_at,
                attempts: by_event.remove(&row.event_seq).unwrap_or_default(),
            })
        })
        .collect()
}

pub(super) fn event_type(stored: &str) -> StoreResult<WebhookEventType> {
    WebhookEventType::parse(stored)
        .ok_or_else(|| StoreError::Backend(format!("unknown webhook event type {stored:?}")))
}

fn delivery_state(stored: &str) -> StoreResult<WebhookDeliveryState> {
    WebhookDeliveryState::parse(stored)
        .ok_or_else(|| StoreError::Backend(format!("unknown webhook delivery state {stored:?}")))
}
