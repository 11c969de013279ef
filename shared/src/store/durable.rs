//! The durable store: the source of truth. Postgres implements it (`postgres/`); an embedded
//! implementation (SQLite, for `agentq dev`) would be one more. Each method is one domain
//! operation done in one round trip where possible, keyed and fenced so a retry or a worker that
//! lost its lease cannot change anything twice.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::error::StoreResult;
use super::model::{
    ActiveCap, ApprovalDecision, ApprovalOutcome, Begin, Created, Decision, Ending, Head, KeyInfo,
    LapsedApproval, Lease, ListQuery, LlmCallRecord, NewKey, NewSession, OrgWebhook,
    OrgWebhookChange, Principal, Promoted, RateLimit, Repair, SessionState, Spend, StepRecord,
    Summary, WebhookAttemptRecord, WebhookDue,
};
use crate::schemas::StepApproval;
use crate::schemas::{SessionEvent, SessionSummary, WebhookDelivery};

/// What a cancel request changed.
#[derive(Debug, Clone)]
pub enum Cancelled {
    /// The session's new fields: cancelled at once (no worker held it) or flagged.
    Changed(Head),
    AlreadyFinished(crate::schemas::SessionStatus),
    NotFound,
}

/// What an approval decision changed.
#[derive(Debug, Clone)]
pub enum Approved {
    Recorded {
        head: Head,
        approval: StepApproval,
        traceparent: Option<String>,
    },
    Expired(Head),
    Outcome(ApprovalOutcome),
}

/// What a decision tells the session's event stream: the `step` event, and the totals its
/// `done` event carries when the decision ends the session.
#[derive(Debug, Clone)]
pub struct Announced {
    pub step: serde_json::Value,
    pub totals: Option<serde_json::Value>,
}

/// A stored decision and the session fields after it.
#[derive(Debug, Clone)]
pub struct DecisionStored {
    pub step: StepRecord,
    pub head: Head,
    /// The step's spend, when a ledger record went in with the decision.
    pub spend: Option<Spend>,
}

/// Holding this keeps one process the reconciler; dropping it lets another take over.
#[async_trait]
pub trait Leadership: Send {
    /// Whether leadership is still held (the connection holding it is alive).
    async fn alive(&mut self) -> bool;
}

#[async_trait]
pub trait Durable: Send + Sync {
    /// What the store runs on (`postgres`, `sqlite`), as readiness and metrics name it.
    fn kind(&self) -> &'static str;
    /// Applies pending migrations.
    async fn migrate(&self) -> StoreResult<()>;
    /// Answers when the store is reachable (readiness).
    async fn ping(&self) -> StoreResult<()>;

    // Keys.
    /// The owner of a live key (not revoked, not expired), noting that it was used.
    async fn principal(&self, key_hash: &str) -> StoreResult<Option<Principal>>;
    /// Makes the org if it is new, and the key.
    async fn create_api_key(
        &self,
        key: &NewKey,
        key_hash: &str,
        key_prefix: &str,
    ) -> StoreResult<Principal>;
    /// The org's keys, oldest first; `None` when no org has that name.
    async fn list_api_keys(&self, org: &str) -> StoreResult<Option<Vec<KeyInfo>>>;
    /// Revokes the key (a second revoke keeps the first time); false when there is no such key.
    async fn revoke_api_key(&self, id: Uuid) -> StoreResult<bool>;
    /// Sets (or with `None` clears) an org's own API rate limit; false when no org has that name.
    async fn set_org_rate_limit(&self, org: &str, limit: Option<RateLimit>) -> StoreResult<bool>;
    /// Sets (or with `None` clears) an org's own cap on active sessions; false when no org has
    /// that name.
    async fn set_org_active_cap(&self, org: &str, cap: Option<ActiveCap>) -> StoreResult<bool>;

    // Sessions, for the API.
    /// Creates the session `pending`, or `queued` when it has a cap (`max_active`) and its org
    /// has that many sessions active or any queued: counted and written under a lock on the
    /// org, so the cap holds across API processes.
    async fn create_session(&self, new: &NewSession) -> StoreResult<Created>;
    /// Starts queued sessions, oldest first, while their org has fewer active sessions than
    /// the cap each was created under: of `org`, or of every org; at most `limit`.
    async fn promote_queued(&self, org: Option<Uuid>, limit: i64) -> StoreResult<Vec<Promoted>>;
    async fn load(&self, id: Uuid) -> StoreResult<Option<SessionState>>;
    async fn request_cancel(&self, id: Uuid, org_id: Uuid) -> StoreResult<Cancelled>;
    async fn decide_approval(&self, decision: &ApprovalDecision) -> StoreResult<Approved>;

    // The step protocol, for the worker.
    /// Takes the lease on the session for step `step` and reads the whole session, in one go.
    async fn begin_step(
        &self,
        id: Uuid,
        step: u32,
        owner: &str,
        ttl: Duration,
    ) -> StoreResult<Begin>;
    /// One LLM call into the ledger; returns what its step has spent since.
    async fn record_llm_call(&self, call: &LlmCallRecord) -> StoreResult<Spend>;
    /// Stores the decision of `step` unless one is stored (then returns that one), with the
    /// ledger record of the call that made it, and ends the session when `ending` is given.
    async fn record_decision(
        &self,
        lease: &Lease,
        step: u32,
        call: Option<&LlmCallRecord>,
        decision: &Decision,
        ending: Option<&Ending>,
        events: &Announced,
    ) -> StoreResult<DecisionStored>;
    /// Marks call `call` of the step as started; false if an earlier delivery already had.
    async fn mark_call_started(&self, lease: &Lease, step: u32, call: usize) -> StoreResult<bool>;
    /// Stores the result of call `call` unless one is stored; with `advance`, also moves the
    /// session to the next step and releases the lease.
    async fn record_observation(
        &self,
        lease: &Lease,
        step: u32,
        call: usize,
        observation: &serde_json::Value,
        advance: bool,
        event: &serde_json::Value,
    ) -> StoreResult<Head>;
    /// Moves the session from `step` to the next one and releases the lease.
    async fn advance(&self, lease: &Lease, step: u32) -> StoreResult<Head>;
    /// The step waits for a human until `expires_at`, without the lease.
    async fn await_approval(
        &self,
        lease: &Lease,
        step: u32,
        expires_at: DateTime<Utc>,
        reviews: &serde_json::Value,
        event: &serde_json::Value,
    ) -> StoreResult<Head>;
    /// Ends an unfinished session; with a lease, only while it is held. `None`: it had
    /// already ended.
    /// Its `done` event carries `totals` (read from the ledger when not given).
    async fn end_session(
        &self,
        id: Uuid,
        lease: Option<&Lease>,
        ending: &Ending,
        totals: Option<&serde_json::Value>,
    ) -> StoreResult<Option<Head>>;
    /// A session's events after `after`, in order, at most `limit`.
    async fn events(&self, id: Uuid, after: i64, limit: i64) -> StoreResult<Vec<SessionEvent>>;
    /// An org's sessions, newest first, after `cursor`.
    async fn list(&self, query: &ListQuery) -> StoreResult<Vec<SessionSummary>>;
    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> StoreResult<bool>;
    async fn release_lease(&self, lease: &Lease) -> StoreResult<()>;
    async fn holds_lease(&self, lease: &Lease) -> StoreResult<bool>;
    async fn cancel_requested(&self, id: Uuid) -> StoreResult<bool>;

    // Administration (benchmarks and tests make databases of their own).
    async fn create_database(&self, name: &str) -> StoreResult<()>;
    async fn drop_database(&self, name: &str) -> StoreResult<()>;
    /// Transactions committed in this database so far.
    async fn transactions_committed(&self) -> StoreResult<u64>;

    // Operators' views.
    async fn summary(&self) -> StoreResult<Summary>;
    /// Sessions not yet finished (queued, pending, running, awaiting approval).
    async fn unfinished(&self) -> StoreResult<u64>;
    async fn lease_holder(&self, id: Uuid) -> StoreResult<Option<String>>;

    // The reconciler.
    async fn lead(&self) -> StoreResult<Option<Box<dyn Leadership>>>;
    async fn claim_stalled(&self, idle: Duration, limit: i64) -> StoreResult<Vec<Repair>>;
    async fn expire_lapsed_approvals(&self) -> StoreResult<Vec<Head>>;
    /// Held turns past their window whose session chose `reject` or `approve` for that case.
    async fn lapsed_approvals(&self, limit: i64) -> StoreResult<Vec<LapsedApproval>>;
    async fn fail_overdue(&self) -> StoreResult<Vec<Head>>;
    async fn forget_idempotency_keys(&self, keep: Duration) -> StoreResult<u64>;

    // Webhooks. Deliveries are written by a trigger on `session_events`, with the transition.
    /// Changes an org's webhook settings and returns them; `None` when no org has that name.
    async fn configure_org_webhook(
        &self,
        org: &str,
        change: &OrgWebhookChange,
    ) -> StoreResult<Option<OrgWebhook>>;
    /// The org's signing secret, set to `candidate` first if it has none.
    async fn webhook_secret(&self, org_id: Uuid, candidate: &str) -> StoreResult<String>;
    /// Claims up to `limit` pending deliveries that are due, for one attempt each: each takes
    /// its next attempt number and is not due again for `lease` (a sender that dies mid-attempt
    /// leaves it to another worker then).
    async fn claim_webhooks(&self, limit: i64, lease: Duration) -> StoreResult<Vec<WebhookDue>>;
    /// Fixes a delivery's body unless an earlier attempt did; returns the body kept.
    async fn fix_webhook_payload(
        &self,
        session_id: Uuid,
        event_seq: i64,
        payload: &serde_json::Value,
    ) -> StoreResult<serde_json::Value>;
    /// Records an attempt and settles the delivery as it says, unless a later claim has taken
    /// the delivery over (then only the attempt is recorded).
    async fn record_webhook_attempt(&self, record: &WebhookAttemptRecord) -> StoreResult<()>;
    /// A session's webhook messages with their attempts, oldest first.
    async fn webhook_deliveries(&self, session_id: Uuid) -> StoreResult<Vec<WebhookDelivery>>;

    /// Notifications of the session's changes made through this process, when the durable
    /// store can give them (the embedded one, whose API and workers share the process).
    fn changes(&self, _id: Uuid) -> Option<super::hot::ChangeFeed> {
        None
    }

    /// Every session that ends from now on, by any process, as `(id, version after)`, while
    /// the connection lasts (`None`: the store cannot tell, or needs not: the embedded store has
    /// no hot copy to keep).
    async fn endings(
        &self,
    ) -> StoreResult<Option<futures::stream::BoxStream<'static, (Uuid, i64)>>> {
        Ok(None)
    }
}
