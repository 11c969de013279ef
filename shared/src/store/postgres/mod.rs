//! The durable store on Postgres. Every method is one statement where it can be (a CTE doing the
//! change, the fence check and the read-back together), so a step costs a handful of round trips;
//! the counters record each one. `queries` of the same area live together: `sessions.rs` (the
//! API's), `steps.rs` (the step protocol's), `ledger.rs`, `keys.rs`, `reconcile.rs`.

mod keys;
mod ledger;
mod reconcile;
mod rows;
mod sessions;
mod steps;
mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use futures::stream::BoxStream;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

use crate::schemas::{SessionEvent, SessionSummary, WebhookDelivery};

use super::counters::Counters;
use super::durable::{Announced, Approved, Cancelled, DecisionStored, Durable, Leadership};
use super::error::{StoreError, StoreResult};
use super::model::{
    ActiveCap, ApprovalDecision, Begin, Created, Decision, Ending, Head, KeyInfo, LapsedApproval,
    Lease, ListQuery, LlmCallRecord, NewKey, NewSession, OrgWebhook, OrgWebhookChange, Principal,
    Promoted, RateLimit, Repair, SessionState, Spend, Summary, WebhookAttemptRecord, WebhookDue,
};

/// The migrations in `migrations/` (tests apply them down and up again).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

pub struct PgDurable {
    pool: PgPool,
    counters: Arc<Counters>,
}

impl PgDurable {
    /// Connects lazily-checked: the first query tells whether Postgres answers.
    pub async fn connect(
        url: &str,
        max_connections: u32,
        counters: Arc<Counters>,
    ) -> Result<Self, String> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            // Each acquire would otherwise cost a round trip of its own.
            .test_before_acquire(false)
            .connect(url)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Self { pool, counters })
    }

    fn count(&self, operation: &'static str) {
        self.counters.durable(operation);
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match error {
            sqlx::Error::RowNotFound => StoreError::NotFound("row"),
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(error.to_string()),
            sqlx::Error::Database(db) => StoreError::Backend(match db.code() {
                Some(code) => format!("{} (SQLSTATE {code})", db.message()),
                None => db.message().to_owned(),
            }),
            other => StoreError::Backend(other.to_string()),
        }
    }
}

fn encode(e: serde_json::Error) -> StoreError {
    StoreError::Backend(format!("cannot encode a value for Postgres: {e}"))
}

/// Where every terminal transition is announced (`agentq_notify_ended`, a trigger on the `done`
/// event): "<session id> <version>".
const ENDED_CHANNEL: &str = "agentq_session_ended";

fn ended(payload: &str) -> Option<(Uuid, i64)> {
    let (id, version) = payload.split_once(' ')?;
    Some((id.parse().ok()?, version.parse().ok()?))
}

/// Holding the connection holds the advisory lock.
struct PgLeadership(sqlx::pool::PoolConnection<sqlx::Postgres>);

#[async_trait]
impl Leadership for PgLeadership {
    async fn alive(&mut self) -> bool {
        sqlx::query!("SELECT 1 AS alive")
            .fetch_one(&mut *self.0)
            .await
            .is_ok()
    }
}

#[async_trait]
impl Durable for PgDurable {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    async fn migrate(&self) -> StoreResult<()> {
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Backend(format!("applying migrations: {e}")))
    }

    async fn endings(&self) -> StoreResult<Option<BoxStream<'static, (Uuid, i64)>>> {
        // A connection of its own: one from the pool would be held for good, a pool of eight
        // serving seven.
        let own = PgPoolOptions::new()
            .max_connections(1)
            .max_lifetime(None)
            .idle_timeout(None)
            .connect_lazy_with((*self.pool.connect_options()).clone());
        let mut listener = sqlx::postgres::PgListener::connect_with(&own).await?;
        listener.listen(ENDED_CHANNEL).await?;
        let ended = listener
            .into_stream()
            // A lost connection ends the stream; the follower listens again.
            .take_while(|n| std::future::ready(n.is_ok()))
            .filter_map(|n| std::future::ready(n.ok().and_then(|n| ended(n.payload()))));
        Ok(Some(ended.boxed()))
    }

    async fn ping(&self) -> StoreResult<()> {
        self.count("ping");
        sqlx::query!("SELECT 1 AS ok").fetch_one(&self.pool).await?;
        Ok(())
    }

    async fn principal(&self, key_hash: &str) -> StoreResult<Option<Principal>> {
        self.count("authenticate");
        keys::principal(&self.pool, key_hash).await
    }

    async fn create_api_key(
        &self,
        key: &NewKey,
        key_hash: &str,
        key_prefix: &str,
    ) -> StoreResult<Principal> {
        keys::create(&self.pool, key, key_hash, key_prefix).await
    }

    async fn list_api_keys(&self, org: &str) -> StoreResult<Option<Vec<KeyInfo>>> {
        keys::list(&self.pool, org).await
    }

    async fn revoke_api_key(&self, id: Uuid) -> StoreResult<bool> {
        keys::revoke(&self.pool, id).await
    }

    async fn set_org_rate_limit(&self, org: &str, limit: Option<RateLimit>) -> StoreResult<bool> {
        keys::set_rate_limit(&self.pool, org, limit).await
    }

    async fn set_org_active_cap(&self, org: &str, cap: Option<ActiveCap>) -> StoreResult<bool> {
        keys::set_active_cap(&self.pool, org, cap).await
    }

    async fn create_session(&self, new: &NewSession) -> StoreResult<Created> {
        self.count("create_session");
        match sessions::create(&self.pool, new).await? {
            Some(created) => Ok(created),
            None => {
                // The key was claimed before (or by a concurrent request): read what it made.
                self.count("create_session");
                sessions::prior(&self.pool, new).await
            }
        }
    }

    async fn promote_queued(&self, org: Option<Uuid>, limit: i64) -> StoreResult<Vec<Promoted>> {
        self.count("promote_queued");
        sessions::promote_queued(&self.pool, org, limit).await
    }

    async fn load(&self, id: Uuid) -> StoreResult<Option<SessionState>> {
        self.count("load_session");
        sessions::load(&self.pool, id).await
    }

    async fn request_cancel(&self, id: Uuid, org_id: Uuid) -> StoreResult<Cancelled> {
        self.count("request_cancel");
        if let Some(head) = sessions::cancel(&self.pool, id, org_id).await? {
            return Ok(Cancelled::Changed(head));
        }
        self.count("request_cancel");
        sessions::cancel_refused(&self.pool, id, org_id).await
    }

    async fn decide_approval(&self, decision: &ApprovalDecision) -> StoreResult<Approved> {
        self.count("decide_approval");
        sessions::decide_approval(&self.pool, decision).await
    }

    async fn begin_step(
        &self,
        id: Uuid,
        step: u32,
        owner: &str,
        ttl: Duration,
    ) -> StoreResult<Begin> {
        self.count("begin_step");
        if let Some(run) = steps::take_lease(&self.pool, id, step, owner, ttl).await? {
            return Ok(Begin::Leased(Box::new(run)));
        }
        self.count("begin_step");
        steps::why_not(&self.pool, id, step).await
    }

    async fn record_llm_call(&self, call: &LlmCallRecord) -> StoreResult<Spend> {
        self.count("record_llm_call");
        ledger::record(&self.pool, call).await?;
        Ok(ledger::spend_of(call))
    }

    async fn record_decision(
        &self,
        lease: &Lease,
        step: u32,
        call: Option<&LlmCallRecord>,
        decision: &Decision,
        ending: Option<&Ending>,
        events: &Announced,
    ) -> StoreResult<DecisionStored> {
        self.count("record_decision");
        steps::record_decision(&self.pool, lease, step, call, decision, ending, events).await
    }

    async fn mark_call_started(&self, lease: &Lease, step: u32, call: usize) -> StoreResult<bool> {
        self.count("mark_call_started");
        if steps::mark_call_started(&self.pool, lease, step, call).await? {
            return Ok(true);
        }
        if !self.holds_lease(lease).await? {
            return Err(StoreError::LeaseLost(lease.session_id));
        }
        Ok(false)
    }

    async fn record_observation(
        &self,
        lease: &Lease,
        step: u32,
        call: usize,
        observation: &serde_json::Value,
        advance: bool,
        event: &serde_json::Value,
    ) -> StoreResult<Head> {
        self.count("record_observation");
        steps::record_observation(&self.pool, lease, step, call, observation, advance, event)
            .await?
            .ok_or(StoreError::LeaseLost(lease.session_id))
    }

    async fn advance(&self, lease: &Lease, step: u32) -> StoreResult<Head> {
        self.count("advance");
        steps::advance(&self.pool, lease, step)
            .await?
            .ok_or(StoreError::LeaseLost(lease.session_id))
    }

    async fn await_approval(
        &self,
        lease: &Lease,
        step: u32,
        expires_at: DateTime<Utc>,
        reviews: &serde_json::Value,
        event: &serde_json::Value,
    ) -> StoreResult<Head> {
        self.count("await_approval");
        steps::await_approval(&self.pool, lease, step, expires_at, reviews, event)
            .await?
            .ok_or(StoreError::LeaseLost(lease.session_id))
    }

    async fn end_session(
        &self,
        id: Uuid,
        lease: Option<&Lease>,
        ending: &Ending,
        totals: Option<&serde_json::Value>,
    ) -> StoreResult<Option<Head>> {
        self.count("end_session");
        let ended = steps::end(&self.pool, id, lease.map(|l| l.fence), ending, totals).await?;
        if ended.is_none()
            && let Some(lease) = lease
            && !self.holds_lease(lease).await?
        {
            return Err(StoreError::LeaseLost(id));
        }
        Ok(ended)
    }

    async fn events(&self, id: Uuid, after: i64, limit: i64) -> StoreResult<Vec<SessionEvent>> {
        self.count("events");
        sessions::events(&self.pool, id, after, limit).await
    }

    async fn list(&self, query: &ListQuery) -> StoreResult<Vec<SessionSummary>> {
        self.count("list_sessions");
        sessions::list(&self.pool, query).await
    }

    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> StoreResult<bool> {
        self.count("renew_lease");
        steps::renew_lease(&self.pool, lease, ttl).await
    }

    async fn release_lease(&self, lease: &Lease) -> StoreResult<()> {
        self.count("release_lease");
        steps::release_lease(&self.pool, lease).await
    }

    async fn holds_lease(&self, lease: &Lease) -> StoreResult<bool> {
        self.count("holds_lease");
        steps::holds_lease(&self.pool, lease).await
    }

    async fn cancel_requested(&self, id: Uuid) -> StoreResult<bool> {
        self.count("cancel_requested");
        steps::cancel_requested(&self.pool, id).await
    }

    async fn create_database(&self, name: &str) -> StoreResult<()> {
        reconcile::create_database(&self.pool, name).await
    }

    async fn drop_database(&self, name: &str) -> StoreResult<()> {
        reconcile::drop_database(&self.pool, name).await
    }

    async fn transactions_committed(&self) -> StoreResult<u64> {
        reconcile::transactions_committed(&self.pool).await
    }

    async fn summary(&self) -> StoreResult<Summary> {
        self.count("summary");
        reconcile::summary(&self.pool).await
    }

    async fn unfinished(&self) -> StoreResult<u64> {
        self.count("unfinished");
        reconcile::unfinished(&self.pool).await
    }

    async fn lease_holder(&self, id: Uuid) -> StoreResult<Option<String>> {
        self.count("lease_holder");
        reconcile::lease_holder(&self.pool, id).await
    }

    async fn lead(&self) -> StoreResult<Option<Box<dyn Leadership>>> {
        let held = reconcile::lead(&self.pool).await?;
        Ok(held.map(|conn| Box::new(PgLeadership(conn)) as Box<dyn Leadership>))
    }

    async fn claim_stalled(&self, idle: Duration, limit: i64) -> StoreResult<Vec<Repair>> {
        self.count("claim_stalled");
        reconcile::claim_stalled(&self.pool, idle, limit).await
    }

    async fn lapsed_approvals(&self, limit: i64) -> StoreResult<Vec<LapsedApproval>> {
        self.count("lapsed_approvals");
        reconcile::lapsed_approvals(&self.pool, limit).await
    }

    async fn expire_lapsed_approvals(&self) -> StoreResult<Vec<Head>> {
        self.count("expire_lapsed_approvals");
        reconcile::expire_lapsed_approvals(&self.pool).await
    }

    async fn fail_overdue(&self) -> StoreResult<Vec<Head>> {
        self.count("fail_overdue");
        reconcile::fail_overdue(&self.pool).await
    }

    async fn forget_idempotency_keys(&self, keep: Duration) -> StoreResult<u64> {
        self.count("forget_idempotency_keys");
        reconcile::forget_idempotency_keys(&self.pool, keep).await
    }

    async fn configure_org_webhook(
        &self,
        org: &str,
        change: &OrgWebhookChange,
    ) -> StoreResult<Option<OrgWebhook>> {
        webhooks::configure(&self.pool, org, change).await
    }

    async fn webhook_secret(&self, org_id: Uuid, candidate: &str) -> StoreResult<String> {
        self.count("webhook_secret");
        webhooks::secret(&self.pool, org_id, candidate).await
    }

    async fn claim_webhooks(&self, limit: i64, lease: Duration) -> StoreResult<Vec<WebhookDue>> {
        self.count("claim_webhooks");
        webhooks::claim(&self.pool, limit, lease).await
    }

    async fn fix_webhook_payload(
        &self,
        session_id: Uuid,
        event_seq: i64,
        payload: &serde_json::Value,
    ) -> StoreResult<serde_json::Value> {
        self.count("fix_webhook_payload");
        webhooks::fix_payload(&self.pool, session_id, event_seq, payload).await
    }

    async fn record_webhook_attempt(&self, record: &WebhookAttemptRecord) -> StoreResult<()> {
        self.count("record_webhook_attempt");
        webhooks::record(&self.pool, record).await
    }

    async fn webhook_deliveries(&self, session_id: Uuid) -> StoreResult<Vec<WebhookDelivery>> {
        self.count("webhook_deliveries");
        self.count("webhook_deliveries");
        webhooks::list(&self.pool, session_id).await
    }
}
