//! The SQL of agentq's embedded store (`agentq-shared`'s `store/sqlite/`): one small function
//! per statement, each checked at build time against the schema in `migrations/sqlite/` like the
//! Postgres store's are against `migrations/`. This crate's `sqlx.toml` points its query macros
//! at `SQLITE_DATABASE_URL` (a Postgres database answers the rest of the workspace's);
//! builds read the committed `.sqlx/` data, which `deploy/sqlx-prepare.sh` refreshes.
//!
//! Rows come back as SQLite stores them: ids as [`Uuid`], times as microseconds since the epoch,
//! JSON and costs as text. The store holds the transactions (`BEGIN IMMEDIATE`), builds the JSON
//! and maps rows to its domain; the modules follow its files.

pub mod reconcile;
pub mod rows;
pub mod sessions;
pub mod steps;
pub mod webhooks;

use sqlx::SqliteExecutor;
use uuid::Uuid;

/// The session columns a change returns (the store's `Head`), with the last event's number, so
/// the events the change announces can be numbered after it.
#[derive(Debug)]
pub struct Head {
    pub id: Uuid,
    pub status: String,
    pub next_step: i64,
    pub final_answer: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub cancel_requested: bool,
    pub version: i64,
    pub approval_expires_at: Option<i64>,
    pub updated_at: i64,
    pub event_seq: i64,
}

/// How a session ends: the status, answer and error columns the ending sets.
#[derive(Debug, Clone, Copy)]
pub struct Ending<'a> {
    pub status: &'a str,
    pub final_answer: Option<&'a str>,
    pub error_code: Option<&'a str>,
    pub error_message: Option<&'a str>,
}

/// Whether the database answers. (Offline data is keyed by a statement's text alone, so no
/// statement here may read exactly like one of the Postgres store's: its `SELECT 1 AS alive`.)
pub async fn ping(db: impl SqliteExecutor<'_>) -> sqlx::Result<()> {
    sqlx::query!("SELECT 1 AS answers").fetch_one(db).await?;
    Ok(())
}
