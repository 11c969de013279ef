//! The durable store on SQLite, for `agentq dev`: one process, one file, no server. The same
//! [`Durable`] contract as Postgres (`../postgres/`), and the same guarantees: every step effect
//! keyed by `(session_id, step_index)`, every step write fenced by the lease. SQLite has no
//! data-modifying CTEs, so each operation is one `BEGIN IMMEDIATE` transaction of plain
//! statements (a write lock from the start: no deadlock between two upgrading readers), and the
//! JSON a Postgres function builds is built here in Rust. Areas as on Postgres: `sessions.rs`
//! (the API's, keys and the ledger too), `steps.rs` (the step protocol's), `reconcile.rs`.
//! The statements themselves are in the `agentq-sqlite` crate (`shared/sqlite/`), in modules of
//! the same names, each checked at build time against `migrations/sqlite/`; here are the
//! transactions, the JSON, and rows turned into the domain's types.

mod reconcile;
mod rows;
mod sessions;
mod steps;
mod webhooks;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use uuid::Uuid;

use crate::schemas::{SessionEvent, SessionSummary, WebhookDelivery};

use super::counters::Counters;
use super::durable::{Announced, Approved, Cancelled, DecisionStored, Durable, Leadership};
use super::error::{StoreError, StoreResult};
use super::hot::{ChangeFeed, Feeds};
use super::model::{
    ActiveCap, ApprovalDecision, Begin, Created, Decision, Ending, Head, KeyInfo, LapsedApproval,
    Lease, ListQuery, LlmCallRecord, NewKey, NewSession, OrgWebhook, OrgWebhookChange, Principal,
    Promoted, RateLimit, Repair, SessionState, Spend, Summary, WebhookAttemptRecord, WebhookDue,
};

/// The migrations in `migrations/sqlite/`.
pub static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

pub struct SqliteDurable {
    /// Readers (WAL lets them run beside the writer).
    pool: SqlitePool,
    /// The one writing connection of this process for this file: writes queue here, in order,
    /// instead of in SQLite's busy handler, which sleeps up to 100 ms between tries.
    writer: SqlitePool,
    /// Followers of this file's sessions in this process, woken after each committed change.
    feeds: Arc<Feeds>,
    counters: Arc<Counters>,
    /// Transactions committed through this store (SQLite keeps no such statistic).
    committed: Arc<std::sync::atomic::AtomicU64>,
}

impl SqliteDurable {
    /// Opens the database at `url` (`sqlite://path/to/file.db`), creating the file if missing.
    /// WAL with `synchronous=FULL`: a commit is on disk when it returns, so neither a killed
    /// process nor a lost machine loses a recorded step.
    pub async fn open(url: &str, counters: Arc<Counters>) -> Result<Self, String> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| format!("not a SQLite URL: {e}"))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let (pool, writer, feeds) = pools(&options).await?;
        Ok(Self {
            pool,
            writer,
            feeds,
            counters,
            committed: Arc::default(),
        })
    }

    fn count(&self, operation: &'static str) {
        self.counters.durable(operation);
    }

    /// Wakes the session's followers in this process (after a committed change).
    fn changed(&self, head: &Head) {
        self.feeds.notify(head.id, head.version);
    }

    /// A write transaction that holds SQLite's write lock from its first statement.
    async fn write(&self) -> StoreResult<sqlx::Transaction<'static, sqlx::Sqlite>> {
        self.committed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }
}

/// The reader and writer pools of the database file `options` names, shared by every store of
/// this process on that file (`agentq dev` runs the API and each worker with a store of its
/// own): one writer per file keeps writes in one queue.
async fn pools(
    options: &SqliteConnectOptions,
) -> Result<(SqlitePool, SqlitePool, Arc<Feeds>), String> {
    type Pools =
        std::collections::HashMap<std::path::PathBuf, (SqlitePool, SqlitePool, Arc<Feeds>)>;
    static OPEN: tokio::sync::Mutex<Option<Pools>> = tokio::sync::Mutex::const_new(None);
    let file = options.get_filename().to_owned();
    let mut open = OPEN.lock().await;
    let open = open.get_or_insert_with(Pools::new);
    if let Some((pool, writer, feeds)) = open.get(&file)
        && !pool.is_closed()
        && !writer.is_closed()
    {
        return Ok((pool.clone(), writer.clone(), feeds.clone()));
    }
    let connect = |max: u32| {
        SqlitePoolOptions::new()
            .max_connections(max)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone())
    };
    // The writer first: it creates the file and switches it to WAL.
    let writer = connect(1).await.map_err(|e| e.to_string())?;
    let pool = connect(4).await.map_err(|e| e.to_string())?;
    let feeds = Arc::new(Feeds::default());
    open.insert(file, (pool.clone(), writer.clone(), feeds.clone()));
    Ok((pool, writer, feeds))
}

/// Microseconds since the epoch, as stored.
pub(super) fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

/// A stored time.
pub(super) fn time(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or_default()
}

/// Now, as stored (and as every statement of one transaction sees it).
pub(super) fn now() -> i64 {
    Utc::now().timestamp_micros()
}

fn encode(e: serde_json::Error) -> StoreError {
    StoreError::Backend(format!("cannot encode a value for SQLite: {e}"))
}

/// Holding the row in `leadership`, renewed on every check.
struct SqliteLeadership {
    pool: SqlitePool,
    holder: String,
}

#[async_trait]
impl Leadership for SqliteLeadership {
    async fn alive(&mut self) -> bool {
        reconcile::renew_leadership(&self.pool, &self.holder)
            .await
            .unwrap_or(false)
    }
}

#[async_trait]
impl Durable for SqliteDurable {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    async fn migrate(&self) -> StoreResult<()> {
        SQLITE_MIGRATOR
            .run(&self.writer)
            .await
            .map_err(|e| StoreError::Backend(format!("applying migrations: {e}")))
    }

    async fn ping(&self) -> StoreResult<()> {
        self.count("ping");
        Ok(agentq_sqlite::ping(&self.pool).await?)
    }

    async fn principal(&self, key_hash: &str) -> StoreResult<Option<Principal>> {
        self.count("authenticate");
        let mut tx = self.write().await?;
        let principal = sessions::principal(&mut tx, key_hash).await?;
        tx.commit().await?;
        Ok(principal)
    }

    async fn create_api_key(
        &self,
        key: &NewKey,
        key_hash: &str,
        key_prefix: &str,
    ) -> StoreResult<Principal> {
        let mut tx = self.write().await?;
        let principal = sessions::create_api_key(&mut tx, key, key_hash, key_prefix).await?;
        tx.commit().await?;
        Ok(principal)
    }

    async fn list_api_keys(&self, org: &str) -> StoreResult<Option<Vec<KeyInfo>>> {
        sessions::keys(&self.pool, org).await
    }

    async fn revoke_api_key(&self, id: Uuid) -> StoreResult<bool> {
        let mut tx = self.write().await?;
        let found = sessions::revoke_key(&mut tx, id).await?;
        tx.commit().await?;
        Ok(found)
    }

    async fn set_org_rate_limit(&self, org: &str, limit: Option<RateLimit>) -> StoreResult<bool> {
        let mut tx = self.write().await?;
        let found = sessions::set_rate_limit(&mut tx, org, limit).await?;
        tx.commit().await?;
        Ok(found)
    }

    async fn set_org_active_cap(&self, org: &str, cap: Option<ActiveCap>) -> StoreResult<bool> {
        let mut tx = self.write().await?;
        let found = sessions::set_active_cap(&mut tx, org, cap).await?;
        tx.commit().await?;
        Ok(found)
    }

    async fn create_session(&self, new: &NewSession) -> StoreResult<Created> {
        self.count("create_session");
        let mut tx = self.write().await?;
        let created = sessions::create(&mut tx, new).await?;
        tx.commit().await?;
        Ok(created)
    }

    async fn promote_queued(&self, org: Option<Uuid>, limit: i64) -> StoreResult<Vec<Promoted>> {
        self.count("promote_queued");
        // Most ends free a slot no one waits for: a read says so without taking the writer.
        if agentq_sqlite::sessions::orgs_with_queued(&self.pool, org)
            .await?
            .is_empty()
        {
            return Ok(Vec::new());
        }
        let mut tx = self.write().await?;
        let promoted = sessions::promote_queued(&mut tx, org, limit).await?;
        tx.commit().await?;
        for p in &promoted {
            self.changed(&p.head);
        }
        Ok(promoted)
    }

    async fn load(&self, id: Uuid) -> StoreResult<Option<SessionState>> {
        self.count("load_session");
        let mut conn = self.pool.acquire().await?;
        rows::load(&mut conn, id).await
    }

    async fn request_cancel(&self, id: Uuid, org_id: Uuid) -> StoreResult<Cancelled> {
        self.count("request_cancel");
        let mut tx = self.write().await?;
        let cancelled = sessions::cancel(&mut tx, id, org_id).await?;
        tx.commit().await?;
        if let Cancelled::Changed(head) = &cancelled {
            self.changed(head);
        }
        Ok(cancelled)
    }

    async fn decide_approval(&self, decision: &ApprovalDecision) -> StoreResult<Approved> {
        self.count("decide_approval");
        let mut tx = self.write().await?;
        let approved = sessions::decide_approval(&mut tx, decision).await?;
        tx.commit().await?;
        if let Approved::Recorded { head, .. } | Approved::Expired(head) = &approved {
            self.changed(head);
        }
        Ok(approved)
    }

    async fn begin_step(
        &self,
        id: Uuid,
        step: u32,
        owner: &str,
        ttl: Duration,
    ) -> StoreResult<Begin> {
        self.count("begin_step");
        let mut tx = self.write().await?;
        let begun = steps::begin(&mut tx, id, step, owner, ttl).await?;
        tx.commit().await?;
        if let Begin::Leased(run) = &begun
            && run.became_running
        {
            self.feeds.notify(id, run.state.record.version);
        }
        Ok(begun)
    }

    async fn record_llm_call(&self, call: &LlmCallRecord) -> StoreResult<Spend> {
        self.count("record_llm_call");
        let mut tx = self.write().await?;
        sessions::record_llm_call(&mut tx, call).await?;
        tx.commit().await?;
        Ok(Spend::of(call))
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
        let mut tx = self.write().await?;
        let stored =
            steps::record_decision(&mut tx, lease, step, call, decision, ending, events).await?;
        tx.commit().await?;
        self.changed(&stored.head);
        Ok(stored)
    }

    async fn mark_call_started(&self, lease: &Lease, step: u32, call: usize) -> StoreResult<bool> {
        self.count("mark_call_started");
        let mut tx = self.write().await?;
        let started = steps::mark_call_started(&mut tx, lease, step, call).await?;
        tx.commit().await?;
        Ok(started)
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
        let mut tx = self.write().await?;
        let head =
            steps::record_observation(&mut tx, lease, step, call, observation, advance, event)
                .await?;
        tx.commit().await?;
        self.changed(&head);
        Ok(head)
    }

    async fn advance(&self, lease: &Lease, step: u32) -> StoreResult<Head> {
        self.count("advance");
        let mut tx = self.write().await?;
        let head = steps::advance(&mut tx, lease, step).await?;
        tx.commit().await?;
        self.changed(&head);
        Ok(head)
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
        let mut tx = self.write().await?;
        let head = steps::await_approval(&mut tx, lease, step, expires_at, reviews, event).await?;
        tx.commit().await?;
        self.changed(&head);
        Ok(head)
    }

    async fn end_session(
        &self,
        id: Uuid,
        lease: Option<&Lease>,
        ending: &Ending,
        totals: Option<&serde_json::Value>,
    ) -> StoreResult<Option<Head>> {
        self.count("end_session");
        let mut tx = self.write().await?;
        let ended = steps::end(&mut tx, id, lease, ending, totals).await?;
        tx.commit().await?;
        if let Some(head) = &ended {
            self.changed(head);
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
        steps::renew_lease(&self.writer, lease, ttl).await
    }

    async fn release_lease(&self, lease: &Lease) -> StoreResult<()> {
        self.count("release_lease");
        steps::release_lease(&self.writer, lease).await
    }

    async fn holds_lease(&self, lease: &Lease) -> StoreResult<bool> {
        self.count("holds_lease");
        steps::holds_lease(&self.pool, lease).await
    }

    async fn cancel_requested(&self, id: Uuid) -> StoreResult<bool> {
        self.count("cancel_requested");
        steps::cancel_requested(&self.pool, id).await
    }

    async fn create_database(&self, _name: &str) -> StoreResult<()> {
        Err(StoreError::Backend(
            "SQLite keeps one database per file: open another file instead".into(),
        ))
    }

    async fn drop_database(&self, _name: &str) -> StoreResult<()> {
        Err(StoreError::Backend(
            "SQLite keeps one database per file: remove the file instead".into(),
        ))
    }

    async fn transactions_committed(&self) -> StoreResult<u64> {
        Ok(self.committed.load(std::sync::atomic::Ordering::Relaxed))
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
        let holder = Uuid::now_v7().to_string();
        if !reconcile::take_leadership(&self.writer, &holder).await? {
            return Ok(None);
        }
        Ok(Some(Box::new(SqliteLeadership {
            pool: self.writer.clone(),
            holder,
        })))
    }

    async fn claim_stalled(&self, idle: Duration, limit: i64) -> StoreResult<Vec<Repair>> {
        self.count("claim_stalled");
        let mut tx = self.write().await?;
        let claimed = reconcile::claim_stalled(&mut tx, idle, limit).await?;
        tx.commit().await?;
        Ok(claimed)
    }

    async fn lapsed_approvals(&self, limit: i64) -> StoreResult<Vec<LapsedApproval>> {
        self.count("lapsed_approvals");
        reconcile::lapsed_approvals(&self.pool, limit).await
    }

    async fn expire_lapsed_approvals(&self) -> StoreResult<Vec<Head>> {
        self.count("expire_lapsed_approvals");
        let mut tx = self.write().await?;
        let expired = reconcile::expire_lapsed_approvals(&mut tx).await?;
        tx.commit().await?;
        expired.iter().for_each(|head| self.changed(head));
        Ok(expired)
    }

    async fn fail_overdue(&self) -> StoreResult<Vec<Head>> {
        self.count("fail_overdue");
        let mut tx = self.write().await?;
        let failed = reconcile::fail_overdue(&mut tx).await?;
        tx.commit().await?;
        failed.iter().for_each(|head| self.changed(head));
        Ok(failed)
    }

    fn changes(&self, id: Uuid) -> Option<ChangeFeed> {
        Some(ChangeFeed(self.feeds.subscribe(id)))
    }

    async fn forget_idempotency_keys(&self, keep: Duration) -> StoreResult<u64> {
        self.count("forget_idempotency_keys");
        reconcile::forget_idempotency_keys(&self.writer, keep).await
    }

    async fn configure_org_webhook(
        &self,
        org: &str,
        change: &OrgWebhookChange,
    ) -> StoreResult<Option<OrgWebhook>> {
        let mut tx = self.write().await?;
        let configured = webhooks::configure(&mut tx, org, change).await?;
        tx.commit().await?;
        Ok(configured)
    }

    async fn webhook_secret(&self, org_id: Uuid, candidate: &str) -> StoreResult<String> {
        self.count("webhook_secret");
        let mut tx = self.write().await?;
        let secret = webhooks::secret(&mut tx, org_id, candidate).await?;
        tx.commit().await?;
        Ok(secret)
    }

    async fn claim_webhooks(&self, limit: i64, lease: Duration) -> StoreResult<Vec<WebhookDue>> {
        self.count("claim_webhooks");
        let mut tx = self.write().await?;
        let claimed = webhooks::claim(&mut tx, limit, lease).await?;
        tx.commit().await?;
        Ok(claimed)
    }

    async fn fix_webhook_payload(
        &self,
        session_id: Uuid,
        event_seq: i64,
        payload: &serde_json::Value,
    ) -> StoreResult<serde_json::Value> {
        self.count("fix_webhook_payload");
        let mut tx = self.write().await?;
        let kept = webhooks::fix_payload(&mut tx, session_id, event_seq, payload).await?;
        tx.commit().await?;
        Ok(kept)
    }

    async fn record_webhook_attempt(&self, record: &WebhookAttemptRecord) -> StoreResult<()> {
        self.count("record_webhook_attempt");
        let mut tx = self.write().await?;
        webhooks::record(&mut tx, record).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn webhook_deliveries(&self, session_id: Uuid) -> StoreResult<Vec<WebhookDelivery>> {
        self.count("webhook_deliveries");
        self.count("webhook_deliveries");
        webhooks::list(&self.pool, session_id).await
    }
}
