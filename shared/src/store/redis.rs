//! The hot copy in Redis: the snapshot `{prefix}:session:{id}` (the session as JSON, with its
//! version beside it in `…:v`), the cancel flag `{prefix}:cancel:{id}`, and the channel
//! `{prefix}:changed:{id}` that hears each new version. A snapshot write is one script call:
//! it skips a version older than the one held, announces the new one, and reports the cancel
//! flag, so a step learns of a cancel without a command of its own.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use uuid::Uuid;

use super::counters::Counters;
use super::hot::{ChangeFeed, Feeds, HotCopy};
use crate::schemas::AgentSession;

/// KEYS: snapshot, its version, cancel flag. ARGV: JSON, version, TTL seconds, channel.
const PUT: &str = r#"
local held = redis.call('GET', KEYS[2])
if (not held) or tonumber(held) <= tonumber(ARGV[2]) then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
  redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
  redis.call('PUBLISH', ARGV[4], ARGV[2])
end
return redis.call('EXISTS', KEYS[3])
"#;

const CANCEL_FLAG_TTL: u64 = 24 * 3600;

pub struct RedisHotCopy {
    conn: ConnectionManager,
    redis_url: String,
    prefix: String,
    ttl: Duration,
    put: redis::Script,
    counters: Arc<Counters>,
    feeds: Arc<Feeds>,
}

/// Listens on `{prefix}:changed:*` for as long as the process runs, reconnecting after Redis
/// restarts. (A change missed while disconnected is found by the followers' periodic re-read.)
async fn listen(redis_url: String, prefix: String, feeds: Arc<Feeds>) {
    let pattern = format!("{prefix}:changed:*");
    loop {
        let subscribed = async {
            let mut pubsub = redis::Client::open(redis_url.as_str())?
                .get_async_pubsub()
                .await?;
            pubsub.psubscribe(&pattern).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        match subscribed.await {
            Ok(pubsub) => {
                let mut messages = pubsub.into_on_message();
                while let Some(message) = messages.next().await {
                    let channel = message.get_channel_name();
                    let id = channel.rsplit(':').next().and_then(|id| id.parse().ok());
                    let version: i64 = message.get_payload().unwrap_or_default();
                    if let Some(id) = id {
                        feeds.notify(id, version);
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot follow session changes; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

impl RedisHotCopy {
    pub fn new(
        conn: ConnectionManager,
        redis_url: &str,
        prefix: &str,
        ttl: Duration,
        counters: Arc<Counters>,
    ) -> Self {
        Self {
            conn,
            redis_url: redis_url.to_owned(),
            prefix: prefix.to_owned(),
            ttl,
            put: redis::Script::new(PUT),
            counters,
            feeds: Arc::default(),
        }
    }

    fn key(&self, kind: &str, id: Uuid) -> String {
        format!("{}:{kind}:{id}", self.prefix)
    }

    /// The channel that hears each new version of a session's snapshot.
    pub fn channel(prefix: &str, id: Uuid) -> String {
        format!("{prefix}:changed:{id}")
    }
}

#[async_trait]
impl HotCopy for RedisHotCopy {
    fn enabled(&self) -> bool {
        true
    }

    async fn snapshot_json(&self, id: Uuid) -> Option<String> {
        self.counters.hot("snapshot");
        let cached: redis::RedisResult<Option<String>> =
            self.conn.clone().get(self.key("session", id)).await;
        cached.unwrap_or_else(|e| {
            tracing::warn!(session_id = %id, error = %e, "Redis unavailable; reading the session from Postgres");
            None
        })
    }

    async fn version(&self, id: Uuid) -> Option<i64> {
        self.counters.hot("version");
        let key = format!("{}:v", self.key("session", id));
        let held: redis::RedisResult<Option<i64>> = self.conn.clone().get(key).await;
        held.unwrap_or_else(|e| {
            tracing::warn!(session_id = %id, error = %e, "Redis unavailable; cannot read a snapshot's version");
            None
        })
    }

    async fn put(&self, session: &AgentSession) -> Option<bool> {
        let id = session.session_id;
        let json = match serde_json::to_string(session) {
            Ok(json) => json,
            Err(e) => {
                tracing::error!(session_id = %id, error = %e, "cannot encode a session snapshot");
                return None;
            }
        };
        self.counters.hot("put_snapshot");
        let snapshot = self.key("session", id);
        let result: redis::RedisResult<i64> = self
            .put
            .key(&snapshot)
            .key(format!("{snapshot}:v"))
            .key(self.key("cancel", id))
            .arg(json)
            .arg(session.version)
            .arg(self.ttl.as_secs().max(1))
            .arg(Self::channel(&self.prefix, id))
            .invoke_async(&mut self.conn.clone())
            .await;
        match result {
            Ok(flag) => Some(flag == 1),
            Err(e) => {
                tracing::warn!(session_id = %id, error = %e, "cannot write the session snapshot to Redis");
                None
            }
        }
    }

    async fn set_cancel_flag(&self, id: Uuid) {
        self.counters.hot("set_cancel_flag");
        let result: redis::RedisResult<()> = self
            .conn
            .clone()
            .set_ex(self.key("cancel", id), 1, CANCEL_FLAG_TTL)
            .await;
        if let Err(e) = result {
            tracing::warn!(session_id = %id, error = %e, "cannot set the cancel flag in Redis; Postgres has it");
        }
    }

    async fn cancel_flagged(&self, id: Uuid) -> Option<bool> {
        self.counters.hot("cancel_flagged");
        let flagged: redis::RedisResult<bool> =
            self.conn.clone().exists(self.key("cancel", id)).await;
        // Unknown when Redis does not answer: the caller asks Postgres.
        flagged.ok()
    }

    async fn ping(&self) -> Result<(), String> {
        let pong: redis::RedisResult<String> =
            redis::cmd("PING").query_async(&mut self.conn.clone()).await;
        pong.map(|_| ()).map_err(|e| e.to_string())
    }

    fn changes(&self, id: Uuid) -> Option<ChangeFeed> {
        if !self.feeds.listening.swap(true, Ordering::SeqCst) {
            tokio::spawn(listen(
                self.redis_url.clone(),
                self.prefix.clone(),
                self.feeds.clone(),
            ));
        }
        Some(ChangeFeed(self.feeds.subscribe(id)))
    }
}
