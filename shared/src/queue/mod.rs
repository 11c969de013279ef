//! The step queue: one job type, `StepJob`, on an apalis-redis queue, behind [`StepQueue`], the
//! one place that makes job ids.
//!
//! The queue is only a wake-up signal: delivery is at least once, so every effect of a job is
//! keyed by `(session_id, step)` in the store. apalis-redis silently skips a push whose id it
//! still holds (FIELD_NOTES): the normal push's id is derived from `(session, step)`, so the
//! same step is never queued twice that way; a resume after approval and a repair by the
//! reconciler need ids of their own, or the skip would swallow them.
//!
//! **Fair share** (on Redis): apalis-redis hands out jobs first in, first out, so one org's
//! thousand waiting steps would delay every other org's. A push therefore parks its job in
//! apalis-redis's scheduled set at a time that never comes (`LANE_AT`), and its id in its org's
//! lane (`{q}:lane:{org}`, the orgs with waiting jobs in the ring `{q}:lanes`). A worker with
//! room for k more steps first moves up to k ids out of the lanes into apalis-redis's active
//! list, one org at a time round the ring (`DISPATCH`, one script: an id leaves the scheduled
//! set only to enter the active list), then fetches as usual. A worker without room does not
//! fetch, so waiting jobs stay in the lanes, where the next org's turn comes after one job.
//! (On SQLite, `sqlite.rs` gets the same order from apalis-sqlite's priorities.)

mod board;
mod sqlite;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use apalis::prelude::{TaskBuilder, TaskId, TaskSink};
use apalis_redis::RedisStorage;
use futures::StreamExt;
use futures::stream::BoxStream;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use uuid::Uuid;

pub use board::{BoardQueue, JsonValues, QueueCounts};

/// "Make step `step` of session `session_id` happen."
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepJob {
    pub session_id: Uuid,
    pub step: u32,
    /// The session's trace (W3C `traceparent`), so every step joins it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// The session's org, whose lane the job waits in (fair share); a job without one waits in
    /// a lane of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_id: Option<Uuid>,
}

impl StepJob {
    pub fn new(session_id: Uuid, step: u32, traceparent: Option<String>) -> Self {
        Self {
            session_id,
            step,
            traceparent,
            org_id: None,
        }
    }

    /// The job, waiting in `org_id`'s lane.
    pub fn of_org(mut self, org_id: Uuid) -> Self {
        self.org_id = Some(org_id);
        self
    }
}

/// Why a step is pushed; it decides the job's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// The next step (or the first): `{session}:{step}`.
    Next,
    /// The step again, after a human decided on its calls: `{session}:{step}:approval`.
    Resume,
    /// The step again, by the reconciler, which bumped the session's fence to `fence`:
    /// `{session}:{step}:r{fence}`.
    Repair { fence: i64 },
}

impl Push {
    fn task_id(self, job: &StepJob) -> TaskId {
        let (session_id, step) = (job.session_id, job.step);
        TaskId::from_string(match self {
            Push::Next => format!("{session_id}:{step}"),
            Push::Resume => format!("{session_id}:{step}:approval"),
            Push::Repair { fence } => format!("{session_id}:{step}:r{fence}"),
        })
    }
}

/// Liveness settings of the Redis queue (FIELD_NOTES: the defaults recover orphans after 5 min).
#[derive(Debug, Clone)]
pub struct QueueSettings {
    pub heartbeat_interval: Duration,
    pub missed_heartbeats: usize,
    /// Jobs a worker fetches at a time: its concurrency, or it holds jobs another could run
    /// (FIELD_NOTES).
    pub batch_size: usize,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(2),
            missed_heartbeats: 3,
            batch_size: 10,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot enqueue step {step} of session {session_id}: {message}")]
pub struct EnqueueError {
    pub session_id: Uuid,
    pub step: u32,
    pub message: String,
}

/// The step queue on Redis (apalis-redis): what the API and the workers share in production.
#[derive(Clone)]
pub struct RedisQueue {
    storage: RedisStorage<StepJob>,
    /// For the wake-up announcements and the depth.
    conn: ConnectionManager,
    redis_url: String,
    name: String,
    /// A worker silent this long is dead (its jobs are re-queued).
    orphaned_after: Duration,
}

/// How many step jobs are where.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Depth {
    /// Queued, due now or later (retries wait a little).
    pub waiting: u64,
    /// Fetched by a live worker and not yet acknowledged.
    pub running: u64,
    /// Given up on after every retry.
    pub dead: u64,
}

/// The most queued sessions one session's end starts (its slot frees one; the rest catch up
/// after a cap was raised or an end was missed).
pub const START_AT_ONCE: i64 = 100;

/// When a job parked in its org's lane is due: never (3000-01-01), until a worker with room
/// moves it on. apalis-redis's own fetch promotes only jobs due by now.
pub const LANE_AT: u64 = 32_503_680_000;

/// KEYS: the ring of orgs with waiting jobs, the org's lane, the wake channel. ARGV: the task
/// id, the org. An org enters the ring when its lane stops being empty, and only then.
const ENROLL: &str = r#"
if redis.call('RPUSH', KEYS[2], ARGV[1]) == 1 then redis.call('RPUSH', KEYS[1], ARGV[2]) end
redis.call('PUBLISH', KEYS[3], 1)
return 1
"#;

/// KEYS: scheduled set, active list, the ring, the lanes' key prefix. ARGV: how many jobs the
/// fetching worker has room for. Moves up to that many (less what the active list already
/// holds) from the lanes to the active list, one per org in ring order; an id no longer in the
/// scheduled set (already run, or pushed twice) is dropped. Returns how many moved.
const DISPATCH: &str = r#"
local want = tonumber(ARGV[1]) - redis.call('LLEN', KEYS[2])
local moved, budget = 0, want * 4 + 64
while moved < want and budget > 0 do
  budget = budget - 1
  local org = redis.call('LPOP', KEYS[3])
  if not org then break end
  local lane = KEYS[4] .. org
  local id = redis.call('LPOP', lane)
  if redis.call('LLEN', lane) > 0 then redis.call('RPUSH', KEYS[3], org) end
  if id and redis.call('ZREM', KEYS[1], id) == 1 then
    redis.call('RPUSH', KEYS[2], id)
    moved = moved + 1
  end
end
return moved
"#;

/// KEYS: active list, scheduled set, dead set, workers set. ARGV: inflight key prefix, the
/// oldest heartbeat of a live worker (seconds).
const DEPTH: &str = r#"
local waiting = redis.call('LLEN', KEYS[1]) + redis.call('ZCARD', KEYS[2])
local dead = redis.call('SCARD', KEYS[3])
local running = 0
for _, worker in ipairs(redis.call('ZRANGEBYSCORE', KEYS[4], ARGV[2], '+inf')) do
  running = running + redis.call('SCARD', ARGV[1] .. worker)
end
return {waiting, running, dead}
"#;

impl RedisQueue {
    /// The queue `{prefix}:steps` on the Redis at `redis_url`, on a connection of its own.
    pub async fn connect(
        redis_url: &str,
        prefix: &str,
        settings: &QueueSettings,
    ) -> anyhow::Result<Self> {
        let conn = crate::store::connect_redis(redis_url).await?;
        let name = Self::name_for(prefix);
        // No task locks and no apalis pub/sub events: every effect is fenced in the store, and
        // the events wake nobody (FIELD_NOTES); both cost Redis work on every step.
        let config = apalis_redis::Config::default()
            .queue(name.clone())
            .lock_tasks(false)
            .emit_events(false)
            .batch_size(settings.batch_size.max(1))
            .heartbeat_interval(settings.heartbeat_interval)
            .missed_heartbeats(settings.missed_heartbeats);
        Ok(Self {
            storage: RedisStorage::new(conn.clone()).with_config(config),
            conn,
            redis_url: redis_url.to_owned(),
            name,
            orphaned_after: settings.heartbeat_interval * settings.missed_heartbeats as u32,
        })
    }

    /// The queue's name for a Redis key prefix.
    pub fn name_for(prefix: &str) -> String {
        format!("{prefix}:steps")
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many jobs wait, run and are dead (live workers' in-flight jobs only).
    pub async fn depth(&self) -> Result<Depth, String> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let alive_since = now.saturating_sub(self.orphaned_after).as_secs();
        let q = &self.name;
        let (waiting, running, dead): (u64, u64, u64) = redis::Script::new(DEPTH)
            .key(format!("{q}:active"))
            .key(format!("{q}:scheduled"))
            .key(format!("{q}:dead"))
            .key(format!("{q}:workers"))
            .arg(format!("{q}:inflight:"))
            .arg(alive_since)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(|e| e.to_string())?;
        Ok(Depth {
            waiting,
            running,
            dead,
        })
    }

    /// Answers when the queue's Redis does.
    pub async fn ping(&self) -> Result<(), String> {
        let pong: redis::RedisResult<String> =
            redis::cmd("PING").query_async(&mut self.conn.clone()).await;
        pong.map(|_| ()).map_err(|e| e.to_string())
    }

    /// The channel a push is announced on, so idle workers fetch at once.
    fn wake_channel(&self) -> String {
        format!("{}:wake", self.name)
    }

    /// Pushes the job with the id its purpose gives it, parked in its org's lane, and wakes
    /// idle workers. Parked first, then enrolled: a lane never names a job apalis-redis lacks
    /// (one enrolled but lost to a crash is repaired by the reconciler, like any lost push).
    async fn push(&self, job: StepJob, why: Push) -> Result<(), String> {
        let mut storage = self.storage.clone();
        let task_id = why.task_id(&job);
        let org = job
            .org_id
            .map_or_else(|| "none".to_owned(), |o| o.simple().to_string());
        storage
            .push_task(
                TaskBuilder::new(job)
                    .task_id(task_id.clone())
                    .run_at_timestamp(LANE_AT)
                    .build(),
            )
            .await
            .map_err(|e| e.to_string())?;
        let q = &self.name;
        redis::Script::new(ENROLL)
            .key(format!("{q}:lanes"))
            .key(format!("{q}:lane:{org}"))
            .key(self.wake_channel())
            .arg(task_id.to_string())
            .arg(&org)
            .invoke_async::<i64>(&mut self.conn.clone())
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Moves up to `room` waiting jobs from the org lanes to the active list, round-robin.
    async fn dispatch(&self, room: usize) -> Result<u64, String> {
        let q = &self.name;
        redis::Script::new(DISPATCH)
            .key(format!("{q}:scheduled"))
            .key(format!("{q}:active"))
            .key(format!("{q}:lanes"))
            .key(format!("{q}:lane:"))
            .arg(room)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(|e| e.to_string())
    }

    /// When a worker should fetch: every `poll_interval`, at once when a push is announced,
    /// and when one of its steps ends; each time only if it has room, after moving that many
    /// jobs out of the org lanes. apalis-redis's own announcement never fires (every push is
    /// scheduled, FIELD_NOTES), so this listens on a channel of its own, reconnecting after
    /// Redis restarts.
    pub fn fetch_signals(
        &self,
        poll_interval: Duration,
        slots: Arc<Slots>,
    ) -> BoxStream<'static, ()> {
        let woken = Arc::new(Notify::new());
        tokio::spawn(listen(
            self.redis_url.clone(),
            self.wake_channel(),
            Arc::downgrade(&woken),
        ));
        let queue = self.clone();
        let freed = slots.clone();
        fetch_signals(poll_interval, woken, Some(freed))
            .filter_map(move |()| {
                let (queue, slots) = (queue.clone(), slots.clone());
                async move {
                    let room = slots.room();
                    if room == 0 {
                        return None;
                    }
                    if let Err(e) = queue.dispatch(room).await {
                        tracing::debug!(error = %e, "cannot move jobs out of the org lanes");
                    }
                    Some(())
                }
            })
            .boxed()
    }

    /// The queue as the apalis board sees it (`board.rs`).
    pub fn board(&self) -> BoardQueue {
        BoardQueue::new(
            self.storage.clone(),
            self.conn.clone(),
            self.name.clone(),
            self.orphaned_after,
        )
    }

    /// The storage a worker process polls (it should poll on an interval: apalis-redis's own
    /// pub/sub does not wake workers, FIELD_NOTES).
    pub fn worker_backend(&self) -> RedisStorage<StepJob> {
        self.storage.clone()
    }
}

/// The step queue: apalis-redis in production, apalis-sqlite for `agentq dev`. Both skip a
/// push whose id they already hold (apalis-sqlite through the job's idempotency key), so a push
/// of an id already present is a no-op on either.
#[derive(Clone)]
pub struct StepQueue {
    backend: QueueBackend,
    /// The steps this process runs, against how many it may.
    slots: Arc<Slots>,
}

/// How many steps a worker process runs at once, against how many it may (its batch size):
/// on Redis a worker fetches only when it has room, so waiting jobs stay in the org lanes
/// rather than in a busy worker's buffer.
#[derive(Debug)]
pub struct Slots {
    busy: AtomicUsize,
    capacity: usize,
    freed: Notify,
}

impl Slots {
    fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            busy: AtomicUsize::new(0),
            capacity: capacity.max(1),
            freed: Notify::new(),
        })
    }

    /// How many more steps it may take now.
    pub fn room(&self) -> usize {
        self.capacity
            .saturating_sub(self.busy.load(Ordering::Relaxed))
    }
}

/// A step running in this process; dropping it frees the slot and lets the worker fetch.
#[must_use]
pub struct Occupied(Arc<Slots>);

impl Drop for Occupied {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
        self.0.freed.notify_one();
    }
}

#[derive(Clone)]
enum QueueBackend {
    Redis(RedisQueue),
    Sqlite(sqlite::SqliteQueue),
}

/// What the apalis board registers, per queue back end.
pub enum Board {
    Redis(BoardQueue),
    Sqlite {
        name: String,
        storage: apalis_sqlite::SqliteStorage<StepJob>,
    },
}

/// The storage a worker polls, for building apalis workers (`agentq-worker`, `agentq dev`).
pub enum WorkerBackend {
    Redis(RedisStorage<StepJob>),
    Sqlite(apalis_sqlite::SqliteStorage<StepJob>),
}

impl StepQueue {
    /// The queue `{prefix}:steps` on the Redis at `redis_url`, on a connection of its own.
    pub async fn connect(
        redis_url: &str,
        prefix: &str,
        settings: &QueueSettings,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            backend: QueueBackend::Redis(RedisQueue::connect(redis_url, prefix, settings).await?),
            slots: Slots::new(settings.batch_size),
        })
    }

    /// The queue in the SQLite database at `url` (created if missing), for one process.
    pub async fn open_sqlite(url: &str, settings: &QueueSettings) -> anyhow::Result<Self> {
        Ok(Self {
            backend: QueueBackend::Sqlite(sqlite::SqliteQueue::open(url, settings).await?),
            slots: Slots::new(settings.batch_size),
        })
    }

    /// The queue the store's configuration implies: next to an embedded (SQLite) store, a
    /// SQLite queue in the same directory (`queue.db`); otherwise Redis.
    pub async fn for_store(
        config: &crate::config::StoreConfig,
        settings: &QueueSettings,
    ) -> anyhow::Result<Self> {
        match sqlite::queue_url_beside(&config.database_url) {
            Some(url) => Self::open_sqlite(&url, settings).await,
            None => Self::connect(&config.redis_url, &config.redis_prefix, settings).await,
        }
    }

    /// The queue's name for a Redis key prefix.
    pub fn name_for(prefix: &str) -> String {
        RedisQueue::name_for(prefix)
    }

    pub fn name(&self) -> &str {
        match &self.backend {
            QueueBackend::Redis(q) => q.name(),
            QueueBackend::Sqlite(q) => q.name(),
        }
    }

    /// How many jobs wait, run and are dead (live workers' in-flight jobs only).
    pub async fn depth(&self) -> Result<Depth, String> {
        match &self.backend {
            QueueBackend::Redis(q) => q.depth().await,
            QueueBackend::Sqlite(q) => q.depth().await,
        }
    }

    /// What the queue's storage is (`redis`, `sqlite`), as readiness names it.
    pub fn kind(&self) -> &'static str {
        match &self.backend {
            QueueBackend::Redis(_) => "redis",
            QueueBackend::Sqlite(_) => "sqlite",
        }
    }

    /// Answers when the queue's storage does.
    pub async fn ping(&self) -> Result<(), String> {
        match &self.backend {
            QueueBackend::Redis(q) => q.ping().await,
            QueueBackend::Sqlite(q) => q.ping().await,
        }
    }

    /// Pushes the job with the id its purpose gives it, and wakes idle workers.
    pub async fn push(&self, job: StepJob, why: Push) -> Result<(), EnqueueError> {
        let (session_id, step) = (job.session_id, job.step);
        let pushed = match &self.backend {
            QueueBackend::Redis(q) => q.push(job, why).await,
            QueueBackend::Sqlite(q) => q.push(job, why).await,
        };
        pushed.map_err(|message| EnqueueError {
            session_id,
            step,
            message,
        })
    }

    /// Starts queued sessions whose org has a free slot (of `org`, or of every org; at most
    /// `limit`): the store makes them `pending` and this queues their first steps. Called
    /// wherever a session ends. Best effort: what fails here (the store, a push) is left to
    /// the reconciler, whose pass does the same for every org and repairs any pending session
    /// whose job was lost. Returns how many were queued.
    pub async fn start_queued(
        &self,
        store: &crate::store::Store,
        org: Option<Uuid>,
        limit: i64,
    ) -> usize {
        let promoted = match store.promote_queued(org, limit).await {
            Ok(promoted) => promoted,
            Err(e) => {
                tracing::warn!(org_id = ?org, error = %e,
                    "cannot start queued sessions yet; the reconciler will");
                return 0;
            }
        };
        let mut queued = 0;
        for p in promoted {
            let job = StepJob::new(p.head.id, p.head.next_step, p.traceparent).of_org(p.org_id);
            match self.push(job, Push::Next).await {
                Ok(()) => queued += 1,
                Err(e) => tracing::warn!(session_id = %p.head.id, error = %e,
                    "cannot queue a started session's first step yet; the reconciler will"),
            }
        }
        queued
    }

    /// Counts a step this process runs until the guard is dropped.
    pub fn occupy(&self) -> Occupied {
        self.slots.busy.fetch_add(1, Ordering::Relaxed);
        Occupied(self.slots.clone())
    }

    /// When a worker should fetch: every `poll_interval`, and at once when a push is announced
    /// (on Redis also when a step ends, and only with room for more).
    pub fn fetch_signals(&self, poll_interval: Duration) -> BoxStream<'static, ()> {
        match &self.backend {
            QueueBackend::Redis(q) => q.fetch_signals(poll_interval, self.slots.clone()),
            QueueBackend::Sqlite(q) => q.fetch_signals(poll_interval),
        }
    }

    /// The queue as the apalis board sees it: on Redis through `board.rs` (apalis-redis's own
    /// listings are wrong), on SQLite apalis-sqlite's storage itself.
    pub fn board(&self) -> Board {
        match &self.backend {
            QueueBackend::Redis(q) => Board::Redis(q.board()),
            QueueBackend::Sqlite(q) => Board::Sqlite {
                name: q.name().to_owned(),
                storage: q.worker_backend(),
            },
        }
    }

    /// The storage a worker process polls.
    pub fn worker_backend(&self) -> WorkerBackend {
        match &self.backend {
            QueueBackend::Redis(q) => WorkerBackend::Redis(q.worker_backend()),
            QueueBackend::Sqlite(q) => WorkerBackend::Sqlite(q.worker_backend()),
        }
    }
}

/// A signal every `poll_interval`, and one each time `woken` (or `freed`'s slots) is notified.
fn fetch_signals(
    poll_interval: Duration,
    woken: Arc<Notify>,
    freed: Option<Arc<Slots>>,
) -> BoxStream<'static, ()> {
    let ticks = futures::stream::unfold((), move |()| async move {
        tokio::time::sleep(poll_interval).await;
        Some(((), ()))
    });
    let pushes = futures::stream::unfold(woken, |woken| async move {
        woken.notified().await;
        Some(((), woken))
    });
    let signals = futures::stream::select(ticks.boxed(), pushes.boxed()).boxed();
    match freed {
        Some(slots) => {
            let ends = futures::stream::unfold(slots, |slots| async move {
                slots.freed.notified().await;
                Some(((), slots))
            });
            futures::stream::select(signals, ends.boxed()).boxed()
        }
        None => signals,
    }
}

/// Forwards announcements on `channel` to `woken` until nobody holds it any more.
async fn listen(redis_url: String, channel: String, woken: std::sync::Weak<Notify>) {
    loop {
        let subscribed = async {
            let mut pubsub = redis::Client::open(redis_url.as_str())?
                .get_async_pubsub()
                .await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        match subscribed.await {
            Ok(pubsub) => {
                let mut messages = pubsub.into_on_message();
                while messages.next().await.is_some() {
                    match woken.upgrade() {
                        Some(woken) => woken.notify_one(),
                        None => return,
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot listen for queue pushes; polling only"),
        }
        if woken.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_purpose_has_its_own_id() {
        let job = StepJob::new(Uuid::nil(), 3, None);
        let ids: Vec<String> = [Push::Next, Push::Resume, Push::Repair { fence: 7 }]
            .into_iter()
            .map(|why| why.task_id(&job).to_string())
            .collect();
        let nil = Uuid::nil();
        assert_eq!(
            ids,
            vec![
                format!("{nil}:3"),
                format!("{nil}:3:approval"),
                format!("{nil}:3:r7")
            ]
        );
    }
}
