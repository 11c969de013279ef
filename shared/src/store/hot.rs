//! The hot copy: speed, never truth. The session snapshot a poll reads, the cancel flag a
//! running step checks cheaply, and the per-session notification that something changed. Redis
//! implements it (`redis.rs`); [`NoHotCopy`] keeps nothing, and every read falls through to the
//! durable store. Losing it loses only speed, so its failures are logged, never returned.

use std::collections::HashMap;

use async_trait::async_trait;
use tokio::sync::watch;
use uuid::Uuid;

use crate::schemas::AgentSession;

#[async_trait]
pub trait HotCopy: Send + Sync {
    /// Whether this hot copy keeps anything (false for [`NoHotCopy`]).
    fn enabled(&self) -> bool;
    /// The session's snapshot as held (JSON of an `AgentSession`), if one is.
    async fn snapshot_json(&self, id: Uuid) -> Option<String>;

    /// The session's snapshot, if one is held and readable.
    async fn snapshot(&self, id: Uuid) -> Option<AgentSession> {
        let json = self.snapshot_json(id).await?;
        match serde_json::from_str(&json) {
            Ok(session) => Some(session),
            Err(e) => {
                tracing::warn!(session_id = %id, error = %e, "ignoring an unreadable session snapshot");
                None
            }
        }
    }
    /// The version of the session's snapshot as held, if one is.
    async fn version(&self, id: Uuid) -> Option<i64>;
    /// Stores the snapshot unless a newer version is held, and announces the change on the
    /// session's channel. Returns whether the cancel flag is up (`None`: not known here).
    async fn put(&self, session: &AgentSession) -> Option<bool>;
    async fn set_cancel_flag(&self, id: Uuid);
    /// Whether the cancel flag is up (`None`: not known here; ask the durable store).
    async fn cancel_flagged(&self, id: Uuid) -> Option<bool>;
    /// Answers when the hot copy is reachable (`Ok` when there is none to reach).
    async fn ping(&self) -> Result<(), String>;
    /// Notifications of the session's new versions, as they are written (`None`: this hot copy
    /// cannot tell; poll the durable store).
    fn changes(&self, id: Uuid) -> Option<ChangeFeed>;
}

/// Wakes when a session has a new version (possibly several at once).
pub struct ChangeFeed(pub(super) tokio::sync::watch::Receiver<i64>);

impl ChangeFeed {
    /// Waits for the next change; false when the feed is gone (the hot copy shut down).
    pub async fn changed(&mut self) -> bool {
        self.0.changed().await.is_ok()
    }
}

/// The change channels of this process's followers, per session (Redis fans its one pattern
/// subscription out through them; the SQLite store its own committed transitions).
#[derive(Default)]
pub(super) struct Feeds {
    senders: std::sync::Mutex<HashMap<Uuid, watch::Sender<i64>>>,
    pub(super) listening: std::sync::atomic::AtomicBool,
}

impl Feeds {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, watch::Sender<i64>>> {
        self.senders.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn subscribe(&self, id: Uuid) -> watch::Receiver<i64> {
        let mut senders = self.lock();
        senders.retain(|_, sender| sender.receiver_count() > 0);
        senders
            .entry(id)
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    pub(super) fn notify(&self, id: Uuid, version: i64) {
        if let Some(sender) = self.lock().get(&id) {
            sender.send_replace(version);
        }
    }
}

/// No hot copy: polls read the durable store, cancel checks ask it too.
pub struct NoHotCopy;

#[async_trait]
impl HotCopy for NoHotCopy {
    fn enabled(&self) -> bool {
        false
    }

    async fn snapshot_json(&self, _id: Uuid) -> Option<String> {
        None
    }

    async fn version(&self, _id: Uuid) -> Option<i64> {
        None
    }

    async fn put(&self, _session: &AgentSession) -> Option<bool> {
        None
    }

    async fn set_cancel_flag(&self, _id: Uuid) {}

    async fn cancel_flagged(&self, _id: Uuid) -> Option<bool> {
        None
    }

    async fn ping(&self) -> Result<(), String> {
        Ok(())
    }

    fn changes(&self, _id: Uuid) -> Option<ChangeFeed> {
        None
    }
}
