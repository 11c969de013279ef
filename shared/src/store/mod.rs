//! State. Postgres is the truth: orgs, hashed API keys, sessions, steps keyed
//! `(session_id, step_index)` and the `llm_calls` cost ledger. Redis holds copies for speed: a
//! write-through session snapshot (1 h TTL) and the cancel flag. Losing Redis loses nothing but
//! speed: every read falls back to Postgres.

mod keys;
mod lease;
mod ledger;
pub mod pg_safe;
mod reconcile;
mod sessions;
mod snapshot;
mod steps;
mod transitions;

use std::time::Duration;

use anyhow::Context;
use apalis_redis::ConnectionManager;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

pub use keys::{Principal, create_api_key, sha256_hex};
pub use lease::{Lease, LeaseLost};
pub use ledger::LlmCallRecord;
pub use reconcile::Repair;
pub use sessions::{Created, IdempotencyKey, SessionRow};
pub use steps::{Decision, StepRow};
pub use transitions::{ApprovalOutcome, CancelOutcome};

use crate::config::StoreConfig;

/// A step write that did not happen.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    LeaseLost(#[from] LeaseLost),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

#[derive(Clone)]
pub struct Store {
    pub pg: PgPool,
    pub redis: ConnectionManager,
    prefix: String,
    snapshot_ttl: Duration,
}

impl Store {
    pub async fn connect(config: &StoreConfig) -> anyhow::Result<Self> {
        let pg = connect_postgres(&config.database_url).await?;
        let redis = connect_redis(&config.redis_url).await?;
        Ok(Self::new(pg, redis, config))
    }

    pub fn new(pg: PgPool, redis: ConnectionManager, config: &StoreConfig) -> Self {
        Self {
            pg,
            redis,
            prefix: config.redis_prefix.clone(),
            snapshot_ttl: config.snapshot_ttl,
        }
    }

    pub fn redis_prefix(&self) -> &str {
        &self.prefix
    }

    fn key(&self, kind: &str, id: impl std::fmt::Display) -> String {
        format!("{}:{kind}:{id}", self.prefix)
    }
}

pub async fn connect_postgres(url: &str) -> anyhow::Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await
        .with_context(|| {
            format!(
                "cannot connect to Postgres at DATABASE_URL ({}); is it running? \
                 deploy/ensure-services.sh starts one",
                redact(url)
            )
        })
}

pub async fn connect_redis(url: &str) -> anyhow::Result<ConnectionManager> {
    let client = redis::Client::open(url)
        .with_context(|| format!("REDIS_URL ({}) is not a valid Redis URL", redact(url)))?;
    let config = redis::aio::ConnectionManagerConfig::new()
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

/// Applies every pending migration in `migrations/`.
pub async fn migrate(pg: &PgPool) -> anyhow::Result<()> {
    MIGRATOR.run(pg).await.context("applying migrations")
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
