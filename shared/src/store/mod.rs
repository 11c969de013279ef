//! State, behind one seam. The API and the worker speak to [`Store`] in domain terms (create a
//! session, begin a step, record a decision, end a session, ...) and never see a database or a
//! cache:
//!
//! - the **durable store** ([`Durable`], Postgres in `postgres/`) is the truth: orgs, hashed API
//!   keys, sessions, steps keyed `(session_id, step_index)`, the `llm_calls` cost ledger;
//! - the **hot copy** ([`HotCopy`], Redis in `redis.rs`, or [`NoHotCopy`]) is speed: the snapshot
//!   a poll reads, the cancel flag, the per-session change channel. Losing it loses only speed.
//!
//! The store owns the hot copy: every transition that changes what a poll shows writes the new
//! snapshot itself, from the state it has in hand (the worker's [`StepRun`], or the snapshot
//! brought up to the transition's new session fields). No caller refreshes anything. Each
//! operation counts its round trips and commands ([`Counters`]).

mod auth;
mod counters;
mod durable;
mod error;
mod hot;
mod model;
mod postgres;
mod reconcile;
mod redis;
mod sessions;
mod sqlite;
mod steps;
pub mod storable;
pub mod view;
mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use uuid::Uuid;

pub use counters::{Count, Counters};
pub use durable::{Durable, Leadership};
pub use error::{StoreError, StoreResult};
pub use hot::{ChangeFeed, HotCopy, NoHotCopy};
pub use model::{
    ActiveCap, ApprovalDecision, ApprovalOutcome, Begin, CancelOutcome, Created, Decision, Ending,
    Head, IdempotencyKey, KeyInfo, LapsedApproval, Lease, ListQuery, LlmCallRecord, NewKey,
    NewSession, OrgWebhook, OrgWebhookChange, Principal, Promoted, RateLimit, Repair,
    SessionRecord, SessionState, Spend, StepRecord, StepRun, Summary, WebhookAttemptRecord,
    WebhookDue, WebhookNext,
};
pub use postgres::MIGRATOR;
pub use redis::RedisHotCopy;
pub use sessions::sha256_hex;
pub use sqlite::{SQLITE_MIGRATOR, SqliteDurable};

use crate::config::{HotCopyMode, StoreConfig};
use crate::schemas::AgentSession;

#[derive(Clone)]
pub struct Store {
    durable: Arc<dyn Durable>,
    hot: Arc<dyn HotCopy>,
    keys: Arc<auth::KeyCache>,
    counters: Arc<Counters>,
}

/// Whether each part of the store answers (for `/readyz`), by what it runs on: the durable
/// store (`postgres` or `sqlite`), and `redis` when there is a hot copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub parts: Vec<(&'static str, Result<(), String>)>,
}

impl Store {
    /// Connects to Postgres (or opens the embedded store at a `sqlite:` URL) and, unless
    /// `AGENTQ_HOT_COPY=none`, Redis, with errors that say which one is missing and how to start
    /// it.
    pub async fn connect(config: &StoreConfig) -> anyhow::Result<Self> {
        let counters = Arc::new(Counters::default());
        let durable =
            Self::open_durable(&config.database_url, config.pg_pool_size, counters.clone()).await?;
        let hot: Arc<dyn HotCopy> = match config.hot_copy {
            HotCopyMode::Redis => Arc::new(RedisHotCopy::new(
                connect_redis(&config.redis_url).await?,
                &config.redis_url,
                &config.redis_prefix,
                config.snapshot_ttl,
                counters.clone(),
            )),
            HotCopyMode::None => Arc::new(NoHotCopy),
        };
        Ok(Self::new(durable, hot, config.auth_cache_ttl, counters))
    }

    /// The durable store alone, for admin commands (no hot copy: nothing to keep warm).
    pub async fn connect_durable(database_url: &str) -> anyhow::Result<Self> {
        let counters = Arc::new(Counters::default());
        let durable = Self::open_durable(database_url, 2, counters.clone()).await?;
        Ok(Self::new(
            durable,
            Arc::new(NoHotCopy),
            Duration::ZERO,
            counters,
        ))
    }

    /// The durable store `url` names: Postgres, or the embedded store at a `sqlite:` URL.
    async fn open_durable(
        url: &str,
        pg_pool_size: u32,
        counters: Arc<Counters>,
    ) -> anyhow::Result<Arc<dyn Durable>> {
        if is_sqlite(url) {
            return Self::open_sqlite(url, counters).await;
        }
        let durable = postgres::PgDurable::connect(url, pg_pool_size, counters)
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot connect to Postgres at DATABASE_URL ({}): {e}; is it running? \
                     deploy/ensure-services.sh starts one",
                    redact(url)
                )
            })?;
        Ok(Arc::new(durable))
    }

    /// A store over any durable store and hot copy.
    pub fn new(
        durable: Arc<dyn Durable>,
        hot: Arc<dyn HotCopy>,
        auth_cache_ttl: Duration,
        counters: Arc<Counters>,
    ) -> Self {
        Self {
            durable,
            hot,
            keys: Arc::new(auth::KeyCache::new(auth_cache_ttl)),
            counters,
        }
    }

    /// The embedded store at a `sqlite:` URL, its migrations applied (`agentq dev`).
    async fn open_sqlite(url: &str, counters: Arc<Counters>) -> anyhow::Result<Arc<dyn Durable>> {
        let durable = SqliteDurable::open(url, counters)
            .await
            .map_err(|e| anyhow::anyhow!("cannot open the SQLite database at {url}: {e}"))?;
        durable
            .migrate()
            .await
            .with_context(|| format!("migrating the SQLite database at {url}"))?;
        Ok(Arc::new(durable))
    }

    /// Round trips and commands made so far, in total and per operation.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Applies every pending migration in `migrations/`.
    pub async fn migrate(&self) -> StoreResult<()> {
        self.durable.migrate().await
    }

    /// Whether the durable store and the hot copy answer.
    pub async fn readiness(&self) -> Readiness {
        let (durable, hot) = tokio::join!(self.durable.ping(), self.hot.ping());
        let mut parts = vec![(self.durable.kind(), durable.map_err(|e| e.to_string()))];
        if self.hot.enabled() {
            parts.push(("redis", hot));
        }
        Readiness { parts }
    }

    /// What the durable store runs on (`postgres`, `sqlite`).
    pub fn durable_kind(&self) -> &'static str {
        self.durable.kind()
    }

    /// Counts a session that a transition ended.
    fn ended(head: &Head) {
        crate::metrics::session_ended(
            head.status.as_str(),
            head.error.as_ref().map(|e| e.code.as_str()),
        );
    }

    /// Writes a snapshot built from the state in hand; returns whether the cancel flag is up,
    /// as far as the hot copy knows.
    async fn publish(&self, state: &SessionState) -> bool {
        self.hot.put(&view::session(state)).await == Some(true)
    }

    /// Brings the snapshot up to a transition that changed only the session's own fields. The
    /// held snapshot is patched when it is the version just before; otherwise (missing, or a
    /// change in between it has not seen) the session is read whole from the durable store.
    async fn catch_up(&self, head: &Head, patch: impl FnOnce(&mut AgentSession)) {
        match self.hot.snapshot(head.id).await {
            Some(mut session) if session.version + 1 == head.version => {
                view::apply_head(&mut session, head);
                patch(&mut session);
                self.hot.put(&session).await;
            }
            Some(session) if session.version >= head.version => {}
            None if !self.hot.enabled() => {}
            _ => match self.durable.load(head.id).await {
                Ok(Some(state)) => {
                    self.publish(&state).await;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(session_id = %head.id, error = %e, "cannot refresh the snapshot")
                }
            },
        }
    }

    /// The cancel check of a running step: the hot copy's flag, or the durable store's when the
    /// hot copy doesn't know.
    pub async fn cancel_flagged(&self, id: Uuid) -> StoreResult<bool> {
        match self.hot.cancel_flagged(id).await {
            Some(flagged) => Ok(flagged),
            None => self.durable.cancel_requested(id).await,
        }
    }

    /// The cancel flag as the durable store has it (the truth).
    pub async fn cancel_requested(&self, id: Uuid) -> StoreResult<bool> {
        self.durable.cancel_requested(id).await
    }
}

/// A Redis connection that reconnects by itself, with short timeouts.
pub async fn connect_redis(url: &str) -> anyhow::Result<::redis::aio::ConnectionManager> {
    let client = ::redis::Client::open(url)
        .with_context(|| format!("REDIS_URL ({}) is not a valid Redis URL", redact(url)))?;
    let config = ::redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_secs(10)));
    client
        .get_connection_manager_with_config(config)
        .await
        .with_context(|| {
            format!(
                "cannot connect to Redis at REDIS_URL ({}); is it running? \
                 deploy/ensure-services.sh starts one",
                redact(url)
            )
        })
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

/// Whether a `DATABASE_URL` names the embedded store (`sqlite:...`) rather than Postgres.
pub fn is_sqlite(url: &str) -> bool {
    url.starts_with("sqlite:")
}
