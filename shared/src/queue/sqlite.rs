//! The step queue on SQLite (apalis-sqlite), for `agentq dev`: the API and the workers share one
//! process, so a push wakes idle workers through an in-process signal instead of Redis pub/sub.
//!
//! apalis-sqlite names jobs with ULIDs of its own; the id [`Push`] makes goes into the job's
//! idempotency key, which apalis-sqlite keeps unique per job type (`ON CONFLICT DO NOTHING`): a
//! second push of the same id is skipped, as apalis-redis skips it. The queue lives in a file of
//! its own (apalis-sqlite runs its own migrations and sets `synchronous = OFF` on its
//! connections): like Redis, it is only the wake-up signal, and the reconciler rebuilds it from
//! the durable store.
//!
//! **Fair share**: apalis-sqlite fetches by priority, then run time. Each push takes a tag from
//! its org's lane (start-time fair queueing: one past the org's last tag, but never behind the
//! most urgent job waiting, or, with none waiting, the last tag given), and the job's priority
//! falls as its tag rises. An org's backlog holds consecutive tags, so another org's job ranks
//! beside the backlog's front, not behind it. The lanes' last tags are a table of this file's
//! own (`agentq_lanes`).

use std::str::FromStr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use apalis::prelude::{TaskBuilder, TaskSink};
use apalis_sqlite::SqliteStorage;
use futures::stream::BoxStream;
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use tokio::sync::Notify;

use super::{Depth, Push, QueueSettings, StepJob};

/// The queue's name (apalis-sqlite's job type).
const NAME: &str = "agentq:steps";

/// The priority of lane tag 0; tag t waits at `LANE_TOP - t`.
const LANE_TOP: i64 = 1 << 52;

/// The queue's file next to an embedded store's (`sqlite://dir/agentq.db` → `dir/queue.db`),
/// or `None` for a Postgres store.
pub(super) fn queue_url_beside(database_url: &str) -> Option<String> {
    if !crate::store::is_sqlite(database_url) {
        return None;
    }
    let options = SqliteConnectOptions::from_str(database_url).ok()?;
    let file = options.get_filename();
    let dir = file.parent().filter(|d| !d.as_os_str().is_empty());
    let queue = match dir {
        Some(dir) => dir.join("queue.db"),
        None => "queue.db".into(),
    };
    Some(format!("sqlite://{}", queue.display()))
}

/// Every worker's wake-up signal in this process.
type Listeners = Arc<Mutex<Vec<Weak<Notify>>>>;

/// The queue's pool for `url` and the wake-up signals of its workers, shared by every queue of
/// this process on that file (the API's and each worker's), set up once. One connection: the
/// queue's writes wait their turn here instead of in SQLite's busy handler, which sleeps up to
/// 100 ms between tries.
async fn shared(url: &str) -> anyhow::Result<(SqlitePool, Listeners)> {
    static OPEN: tokio::sync::Mutex<
        Option<std::collections::HashMap<String, (SqlitePool, Listeners)>>,
    > = tokio::sync::Mutex::const_new(None);
    let mut open = OPEN.lock().await;
    let open = open.get_or_insert_with(Default::default);
    if let Some(shared) = open.get(url).filter(|(p, _)| !p.is_closed()) {
        return Ok(shared.clone());
    }
    let options = SqliteConnectOptions::from_str(url)
        .map_err(|e| anyhow::anyhow!("not a SQLite URL ({url}): {e}"))?
        .create_if_missing(true)
        .busy_timeout(Duration::from_secs(10));
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(options)
        .await
        .map_err(|e| anyhow::anyhow!("cannot open the queue's database at {url}: {e}"))?;
    SqliteStorage::setup(&pool)
        .await
        .map_err(|e| anyhow::anyhow!("cannot set up the queue's database at {url}: {e}"))?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS agentq_lanes (org TEXT PRIMARY KEY, last_tag INTEGER NOT NULL)",
    )
    .execute(&pool)
    .await
    .map_err(|e| anyhow::anyhow!("cannot set up the queue's lanes at {url}: {e}"))?;
    let shared = (pool, Listeners::default());
    open.insert(url.to_owned(), shared.clone());
    Ok(shared)
}

#[derive(Clone)]
pub(super) struct SqliteQueue {
    storage: SqliteStorage<StepJob>,
    pool: SqlitePool,
    listeners: Listeners,
}

impl SqliteQueue {
    pub async fn open(url: &str, settings: &QueueSettings) -> anyhow::Result<Self> {
        let (pool, listeners) = shared(url).await?;
        let config = apalis_sqlite::Config::default()
            .queue(NAME)
            .batch_size(settings.batch_size.max(1))
            .heartbeat_interval(settings.heartbeat_interval)
            .missed_heartbeats(settings.missed_heartbeats);
        Ok(Self {
            storage: SqliteStorage::new(&pool).with_config(config),
            pool,
            listeners,
        })
    }

    pub fn name(&self) -> &str {
        NAME
    }

    pub async fn depth(&self) -> Result<Depth, String> {
        let (waiting, running, dead): (i64, i64, i64) = sqlx::query_as(
            "SELECT
                 coalesce(sum(status = 'Pending' OR (status = 'Failed' AND attempts < max_attempts)), 0),
                 coalesce(sum(status IN ('Queued', 'Running')), 0),
                 coalesce(sum(status = 'Killed' OR (status = 'Failed' AND attempts >= max_attempts)), 0)
             FROM Jobs WHERE job_type = ?1",
        )
        .bind(NAME)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| e.to_string())?;
        Ok(Depth {
            waiting: waiting.max(0) as u64,
            running: running.max(0) as u64,
            dead: dead.max(0) as u64,
        })
    }

    pub async fn ping(&self) -> Result<(), String> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    pub async fn push(&self, job: StepJob, why: Push) -> Result<(), String> {
        let key = why.task_id(&job).to_string();
        let priority = self.lane_priority(job.org_id).await?;
        let mut storage = self.storage.clone();
        storage
            .push_task(
                TaskBuilder::new(job)
                    .idempotency_key(key)
                    .priority(priority)
                    .build(),
            )
            .await
            .map_err(|e| e.to_string())?;
        if let Ok(mut listeners) = self.listeners.lock() {
            listeners.retain(|l| match l.upgrade() {
                Some(woken) => {
                    woken.notify_one();
                    true
                }
                None => false,
            });
        }
        Ok(())
    }

    /// The next tag of the org's lane, as a priority (the earlier the tag, the higher).
    async fn lane_priority(&self, org: Option<uuid::Uuid>) -> Result<usize, String> {
        let org = org.map_or_else(|| "none".to_owned(), |o| o.simple().to_string());
        let tag: i64 = sqlx::query_scalar(
            "INSERT INTO agentq_lanes (org, last_tag)
             SELECT ?1, max(coalesce((SELECT last_tag FROM agentq_lanes WHERE org = ?1), 0) + 1,
                            coalesce(?2 - (SELECT max(priority) FROM Jobs
                                           WHERE job_type = ?3 AND status = 'Pending'),
                                     (SELECT max(last_tag) FROM agentq_lanes), 0))
             ON CONFLICT (org) DO UPDATE SET last_tag = excluded.last_tag
             RETURNING last_tag",
        )
        .bind(&org)
        .bind(LANE_TOP)
        .bind(NAME)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| e.to_string())?;
        Ok(usize::try_from(LANE_TOP - tag.clamp(0, LANE_TOP)).unwrap_or(0))
    }

    pub fn fetch_signals(&self, poll_interval: Duration) -> BoxStream<'static, ()> {
        let woken = Arc::new(Notify::new());
        if let Ok(mut listeners) = self.listeners.lock() {
            listeners.push(Arc::downgrade(&woken));
        }
        super::fetch_signals(poll_interval, woken, None)
    }

    pub fn worker_backend(&self) -> SqliteStorage<StepJob> {
        self.storage.clone()
    }
}
