//! The webhook sender: in every worker, beside the reconciler, it delivers the messages the
//! outbox holds. (A trigger on `session_events` writes a delivery in the transaction of each
//! transition to `awaiting_approval` and of each ending, when the session has a webhook URL: see
//! `agentq_shared::webhooks`.) What it guarantees:
//!
//! - **A step never waits on a webhook.** Steps only write rows; sending happens here, on tasks
//!   of its own, each attempt bounded in time (`AGENTQ_WEBHOOK_TIMEOUT_SECS`) and the attempts of
//!   a worker in number (`AGENTQ_WEBHOOK_CONCURRENCY`).
//! - **At least once, one attempt at a time.** A claim takes the message's next attempt number
//!   and hides it for a lease longer than any attempt (Postgres: `FOR UPDATE SKIP LOCKED`;
//!   SQLite: one `BEGIN IMMEDIATE` transaction), so workers never send one message at once; a
//!   worker that dies mid-attempt leaves it to be claimed again when the lease lapses. Every
//!   attempt carries the same `webhook-id` and body, so receivers can drop repeats.
//! - **Every attempt is recorded** (status or error, duration): a 2xx answer delivers the
//!   message; anything else is tried again after the next wait of `AGENTQ_WEBHOOK_RETRY_SCHEDULE`,
//!   and when the schedule is spent the message has failed. Only the attempt holding the latest
//!   claim may settle a message.
//! - **The SSRF policy holds at each attempt**: the URL is resolved and every address checked
//!   (`AGENTQ_WEB_FETCH_ALLOW`/`_DENY` as for web_fetch), the client connects only to those
//!   addresses, without a proxy, and follows no redirect. A URL the policy refuses fails the
//!   message at once (a name that does not resolve is tried again).

use std::sync::Arc;
use std::time::{Duration, Instant};

use agentq_shared::config::{WebFetchSettings, WebhookSettings};
use agentq_shared::ssrf::{Policy, Refused, Resolver, SystemResolver};
use agentq_shared::store::{Store, WebhookAttemptRecord, WebhookDue, WebhookNext};
use chrono::Utc;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use tokio::sync::Semaphore;

use crate::Context;
use crate::tools::web_fetch::{error_chain, pinned_client};

const USER_AGENT: &str = "agentq-webhooks/0.1";
/// How much longer than an attempt's timeout a claim hides its message: the attempt's own
/// store writes fit in it.
const LEASE_MARGIN: Duration = Duration::from_secs(30);

/// Signs and sends messages; built once per worker.
pub struct Sender {
    policy: Policy,
    resolver: Arc<dyn Resolver>,
    settings: WebhookSettings,
}

/// How one attempt went.
#[derive(Debug)]
enum Outcome {
    Answered(reqwest::StatusCode),
    /// The SSRF policy refused the URL.
    Refused(Refused),
    /// No answer: could not connect, or timed out.
    NoAnswer(String),
}

impl Sender {
    /// Fails on an `AGENTQ_WEB_FETCH_ALLOW`/`_DENY` entry that is not a CIDR, address or host name.
    pub fn new(settings: &WebhookSettings, lists: &WebFetchSettings) -> anyhow::Result<Self> {
        Ok(Self {
            policy: Policy::new(&lists.allow, &lists.deny)?,
            resolver: Arc::new(SystemResolver),
            settings: settings.clone(),
        })
    }

    fn lease(&self) -> Duration {
        self.settings.timeout + LEASE_MARGIN
    }

    /// One attempt at one message, recorded. A message whose body or secret can't be read now
    /// (the store is down) is left to be claimed again when its lease lapses.
    pub async fn deliver(&self, store: &Store, due: WebhookDue) {
        let id = due.message_id();
        let prepared = async {
            let body = store.webhook_body(&due).await?;
            let secret = store.webhook_secret(&due).await?;
            anyhow::Ok((serde_json::to_vec(&body)?, secret))
        };
        let (body, secret) = match prepared.await {
            Ok(prepared) => prepared,
            Err(e) => {
                tracing::warn!(session_id = %due.session_id, webhook_id = %id, error = %e,
                    "cannot prepare a webhook message; it is tried again later");
                return;
            }
        };
        let at = Utc::now();
        let started = Instant::now();
        let outcome = match tokio::time::timeout(
            self.settings.timeout,
            self.send(&due.url, &id, &secret, body),
        )
        .await
        {
            Ok(outcome) => outcome,
            Err(_) => Outcome::NoAnswer(format!(
                "timed out after {:?} (AGENTQ_WEBHOOK_TIMEOUT_SECS)",
                self.settings.timeout
            )),
        };
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let next = match &outcome {
            Outcome::Answered(status) if status.is_success() => WebhookNext::Delivered,
            Outcome::Refused(refused) if !matches!(refused, Refused::Unresolved { .. }) => {
                WebhookNext::Failed
            }
            _ => match self.settings.retry_after(due.attempt) {
                Some(wait) => WebhookNext::RetryAt(Utc::now() + wait),
                None => WebhookNext::Failed,
            },
        };
        let (status_code, error) = match outcome {
            Outcome::Answered(status) => (Some(status.as_u16()), None),
            Outcome::Refused(refused) => (None, Some(format!("refused: {refused}"))),
            Outcome::NoAnswer(error) => (None, Some(error)),
        };
        let result = match next {
            WebhookNext::Delivered => "delivered",
            WebhookNext::RetryAt(_) => "retry",
            WebhookNext::Failed => "failed",
        };
        metrics::counter!("agentq_webhook_attempts_total", "result" => result).increment(1);
        tracing::info!(session_id = %due.session_id, webhook_id = %id,
            event = due.event_type.as_str(), attempt = due.attempt, ?status_code, ?error, result,
            "webhook attempt");
        let record = WebhookAttemptRecord {
            session_id: due.session_id,
            event_seq: due.event_seq,
            attempt: due.attempt,
            at,
            status_code,
            error,
            duration_ms,
            next,
        };
        if let Err(e) = store.record_webhook_attempt(&record).await {
            tracing::warn!(session_id = %due.session_id, webhook_id = %id, error = %e,
                "cannot record a webhook attempt; the message is tried again later");
        }
    }

    /// Checks the URL, connects to the checked addresses only and POSTs the signed body.
    async fn send(&self, url: &str, id: &str, secret: &str, body: Vec<u8>) -> Outcome {
        let url = match reqwest::Url::parse(url) {
            Ok(url) => url,
            Err(e) => return Outcome::NoAnswer(format!("the stored URL does not parse: {e}")),
        };
        let pinned = match self.policy.check(&url, self.resolver.as_ref()).await {
            Ok(pinned) => pinned,
            Err(refused) => return Outcome::Refused(refused),
        };
        let timestamp = Utc::now().timestamp();
        let signature = match agentq_shared::webhooks::sign(secret, id, timestamp, &body) {
            Ok(signature) => signature,
            Err(e) => return Outcome::NoAnswer(format!("cannot sign: {e}")),
        };
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, value) in [
            ("webhook-id", id.to_owned()),
            ("webhook-timestamp", timestamp.to_string()),
            ("webhook-signature", signature),
        ] {
            match HeaderValue::from_str(&value) {
                Ok(value) => {
                    headers.insert(name, value);
                }
                Err(_) => return Outcome::NoAnswer(format!("{name} is not a header value")),
            }
        }
        let client = match pinned_client(&pinned, USER_AGENT) {
            Ok(client) => client,
            Err(e) => return Outcome::NoAnswer(error_chain(&e)),
        };
        match client.post(url).headers(headers).body(body).send().await {
            Ok(response) => Outcome::Answered(response.status()),
            Err(e) => Outcome::NoAnswer(format!("could not deliver: {}", error_chain(&e))),
        }
    }
}

/// Claims due messages every `AGENTQ_WEBHOOK_POLL_MS` (at once again after a full batch) and
/// sends each on a task of its own, at most `AGENTQ_WEBHOOK_CONCURRENCY` at a time.
pub async fn run(ctx: Arc<Context>, sender: Sender) {
    let sender = Arc::new(sender);
    let slots = Arc::new(Semaphore::new(sender.settings.concurrency));
    loop {
        if slots.available_permits() == 0 {
            // Every slot is busy: wait for one to free up before claiming more.
            drop(slots.acquire().await);
        }
        let free = slots.available_permits();
        let mut full_batch = false;
        match ctx.store.claim_webhooks(free as i64, sender.lease()).await {
            Ok(due) => {
                full_batch = due.len() == free;
                for message in due {
                    let Ok(slot) = slots.clone().acquire_owned().await else {
                        return;
                    };
                    let (ctx, sender) = (ctx.clone(), sender.clone());
                    tokio::spawn(async move {
                        sender.deliver(&ctx.store, message).await;
                        drop(slot);
                    });
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot claim webhook messages"),
        }
        if !full_batch {
            tokio::time::sleep(sender.settings.poll_interval).await;
        }
    }
}
