//! The step queue as the apalis board sees it.
//!
//! apalis-redis 1.0 implements the board's listing traits, but not against the keys it writes
//! (FIELD_NOTES): its per-queue task list reads a list named after the queue itself (always
//! empty), its counts read the done and dead sets as sorted sets (an error), its worker list
//! reads metadata keys nobody writes and keeps workers that stopped, and its queue list parses
//! statistics as queues. [`BoardQueue`] answers the same traits from the keys the queue does
//! write, naming each job's state by where its id sits:
//!
//! | where the id is                          | status    |
//! |------------------------------------------|-----------|
//! | `{q}:inflight:{w}`, worker `w` alive     | `Running` |
//! | `{q}:inflight:{w}`, worker `w` silent    | `Pending` (its worker died; recovery re-queues it) |
//! | `{q}:active`, or `{q}:scheduled` and due | `Queued` (apalis-redis pushes every job to the scheduled set) |
//! | `{q}:scheduled` at `LANE_AT`             | `Queued` (waiting in its org's lane; shown without a run time) |
//! | `{q}:scheduled`, its last attempt failed | `Failed` (waiting for its retry) |
//! | `{q}:scheduled`, due later               | `Pending` |
//! | `{q}:dead`                               | `Killed`  |
//! | `{q}:done`                               | `Done`    |
//!
//! A worker is alive while its heartbeat is younger than `heartbeat × missed heartbeats`, the
//! same window after which the queue re-queues its jobs. Listings go running, waiting, dead,
//! then done (the last two newest first).
//!
//! The type exists for the board only: polling it as a worker backend yields nothing, and a
//! push through it lands in the same Redis keys as [`super::StepQueue::push`].

use std::collections::HashMap;
use std::pin::Pin;
use std::str::FromStr;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use apalis::prelude::{
    Backend, FetchById, Filter, ListAllTasks, ListQueues, ListTasks, ListWorkers, MetadataStore,
    Metrics, QueueInfo, RunningWorker, StatType, Statistic, Status, Task, TaskBuilder, TaskId,
    WorkerContext,
};
use apalis_core::backend::codec::Codec;
use apalis_core::backend::finalize::Durable;
use apalis_core::backend::{BackendConfig, WireFormatBackend};
use apalis_redis::RedisStorage;
use futures::Sink;
use redis::aio::ConnectionManager;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::StepJob;

/// Page size when the board asks for none (apalis's default).
const DEFAULT_PAGE_SIZE: u32 = 10;
/// The largest page served, whatever the board asks for.
const MAX_PAGE_SIZE: u32 = 500;

/// KEYS: active list, scheduled set, workers set, dead set, done set, data hash.
/// ARGV: inflight key prefix, meta key prefix, oldest heartbeat of a live worker, status filter
/// ("" for all), offset, limit, now (seconds).
/// Returns `{id, status, worker, data | nil, run_at | "", meta fields}` per job.
const LIST: &str = r#"
local LANE_AT = 32503680000 -- super::LANE_AT, when lane jobs are due
local inflight, meta, live_since, filter = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local skip, want, now = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local picked = {}
local function wanted(status) return filter == '' or filter == status end
local function add(id, status, worker)
  if want <= 0 then return end
  if skip > 0 then skip = skip - 1; return end
  table.insert(picked, {id, status, worker or ''})
  want = want - 1
end
-- `count` ids of which only the page's are read: fetch(first, last), 0-based, inclusive.
local function add_range(count, status, fetch)
  if want <= 0 or count == 0 then return end
  if skip >= count then skip = skip - count; return end
  local ids = fetch(skip, math.min(count, skip + want) - 1)
  skip = 0
  for _, id in ipairs(ids) do
    table.insert(picked, {id, status, ''})
    want = want - 1
  end
end
local function newest_first(set)
  return function(first, last)
    return redis.call('SORT', set, 'BY', meta .. '*->done_at', 'DESC',
      'LIMIT', first, last - first + 1)
  end
end

local workers = redis.call('ZRANGE', KEYS[3], 0, -1, 'WITHSCORES')
local orphaned = {}
for i = 1, #workers, 2 do
  local worker, seen = workers[i], tonumber(workers[i + 1])
  local ids = redis.call('SMEMBERS', inflight .. worker)
  table.sort(ids)
  for _, id in ipairs(ids) do
    if seen >= live_since then
      if wanted('Running') then add(id, 'Running', worker) end
    else
      table.insert(orphaned, {id, worker})
    end
  end
end
if wanted('Pending') then
  for _, job in ipairs(orphaned) do add(job[1], 'Pending', job[2]) end
end
if wanted('Queued') then
  add_range(redis.call('LLEN', KEYS[1]), 'Queued', function(first, last)
    return redis.call('LRANGE', KEYS[1], first, last)
  end)
end
-- Waiting in the scheduled set, in run order: a job due now is Queued (apalis-redis pushes
-- every job there), a later one Pending, one whose last attempt failed Failed. Read in chunks
-- until the page is full.
if wanted('Queued') or wanted('Pending') or wanted('Failed') then
  local from = 0
  while want > 0 do
    local chunk = redis.call('ZRANGE', KEYS[2], from, from + 199, 'WITHSCORES')
    if #chunk == 0 then break end
    for i = 1, #chunk, 2 do
      local id = chunk[i]
      local status = 'Queued'
      if redis.call('HGET', meta .. id, 'status') == 'Failed' then status = 'Failed'
      elseif tonumber(chunk[i + 1]) > now and tonumber(chunk[i + 1]) < LANE_AT then
        status = 'Pending'
      end
      if wanted(status) then add(id, status) end
    end
    from = from + 200
  end
end
if wanted('Killed') then add_range(redis.call('SCARD', KEYS[4]), 'Killed', newest_first(KEYS[4])) end
if wanted('Done') then add_range(redis.call('SCARD', KEYS[5]), 'Done', newest_first(KEYS[5])) end

local out = {}
for _, job in ipairs(picked) do
  local id = job[1]
  local run_at = redis.call('ZSCORE', KEYS[2], id) or ''
  if run_at ~= '' and tonumber(run_at) >= LANE_AT then run_at = '' end
  table.insert(out, {id, job[2], job[3], redis.call('HGET', KEYS[6], id), run_at,
    redis.call('HGETALL', meta .. id)})
end
return out
"#;

/// KEYS: as `LIST`. ARGV: inflight key prefix, meta key prefix, oldest heartbeat of a live
/// worker, the task id, now (seconds). Returns one row as `LIST` does, or nil.
const FETCH: &str = r#"
local LANE_AT = 32503680000 -- super::LANE_AT, when lane jobs are due
local inflight, meta, live_since, id = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local now = tonumber(ARGV[5])
local data = redis.call('HGET', KEYS[6], id)
local fields = redis.call('HGETALL', meta .. id)
if not data and #fields == 0 then return false end
local status, worker = nil, ''
local run_at = redis.call('ZSCORE', KEYS[2], id)
if redis.call('SISMEMBER', KEYS[5], id) == 1 then
  status = 'Done'
elseif redis.call('SISMEMBER', KEYS[4], id) == 1 then
  status = 'Killed'
elseif run_at then
  status = 'Queued'
  if redis.call('HGET', meta .. id, 'status') == 'Failed' then status = 'Failed'
  elseif tonumber(run_at) > now and tonumber(run_at) < LANE_AT then status = 'Pending' end
  if tonumber(run_at) >= LANE_AT then run_at = nil end
elseif redis.call('LPOS', KEYS[1], id) then
  status = 'Queued'
else
  local workers = redis.call('ZRANGE', KEYS[3], 0, -1, 'WITHSCORES')
  for i = 1, #workers, 2 do
    if redis.call('SISMEMBER', inflight .. workers[i], id) == 1 then
      worker = workers[i]
      status = tonumber(workers[i + 1]) >= live_since and 'Running' or 'Pending'
      break
    end
  end
end
if not status then status = redis.call('HGET', meta .. id, 'status') or 'Pending' end
return {id, status, worker, data, run_at or '', fields}
"#;

/// KEYS: as `LIST`. ARGV: inflight key prefix, meta key prefix, oldest heartbeat of a live
/// worker, now (seconds).
/// Returns {running, orphaned, queued, retrying (failed), scheduled, dead, done, most recent
/// end, ends per day for the last 7 days, oldest first}.
const STATS: &str = r#"
local LANE_AT = 32503680000 -- super::LANE_AT, when lane jobs are due
local inflight, meta, live_since, now = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local running, orphaned = 0, 0
local workers = redis.call('ZRANGE', KEYS[3], 0, -1, 'WITHSCORES')
for i = 1, #workers, 2 do
  local n = redis.call('SCARD', inflight .. workers[i])
  if tonumber(workers[i + 1]) >= live_since then running = running + n else orphaned = orphaned + n end
end
local queued, failed, scheduled = redis.call('LLEN', KEYS[1]), 0, 0
local waiting = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
for i = 1, #waiting, 2 do
  if redis.call('HGET', meta .. waiting[i], 'status') == 'Failed' then failed = failed + 1
  elseif tonumber(waiting[i + 1]) > now and tonumber(waiting[i + 1]) < LANE_AT then
    scheduled = scheduled + 1
  else queued = queued + 1 end
end
local days = {0, 0, 0, 0, 0, 0, 0}
local latest = 0
for _, set in ipairs({KEYS[4], KEYS[5]}) do
  for _, id in ipairs(redis.call('SMEMBERS', set)) do
    local at = tonumber(redis.call('HGET', meta .. id, 'done_at'))
    if at then
      if at > latest then latest = at end
      local age = math.floor((now - at) / 86400)
      if age >= 0 and age < 7 then days[7 - age] = days[7 - age] + 1 end
    end
  end
end
return {running, orphaned, queued, failed, scheduled,
  redis.call('SCARD', KEYS[4]), redis.call('SCARD', KEYS[5]), latest, days}
"#;

/// KEYS: workers set. ARGV: oldest heartbeat of a live worker, worker metadata key prefix.
/// Returns `{name, last heartbeat, backend, service}` per live worker, oldest first.
const WORKERS: &str = r#"
local out = {}
local workers = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf', 'WITHSCORES')
for i = 1, #workers, 2 do
  local meta = redis.call('HMGET', ARGV[2] .. workers[i], 'backend_name', 'service')
  table.insert(out, {workers[i], workers[i + 1], meta[1] or '', meta[2] or ''})
end
return out
"#;

/// One job as the scripts return it.
type Row = (
    String,
    String,
    String,
    Option<Vec<u8>>,
    String,
    Vec<Vec<u8>>,
);

/// Job arguments as JSON values, so every listing shows them as JSON (apalis-redis's own
/// codec hands out bytes, which the board's all-queues listing shows as numbers).
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonValues;

impl<T: Serialize + DeserializeOwned> Codec<T> for JsonValues {
    type Error = serde_json::Error;
    type Compact = Value;

    fn encode(&self, val: &T) -> Result<Value, Self::Error> {
        serde_json::to_value(val)
    }

    fn decode(&self, compact: &Value) -> Result<T, Self::Error> {
        T::deserialize(compact)
    }
}

/// The step queue for the apalis board; see the module documentation.
#[derive(Clone)]
pub struct BoardQueue {
    storage: RedisStorage<StepJob>,
    conn: ConnectionManager,
    name: String,
    orphaned_after: Duration,
    codec: JsonValues,
}

/// How many jobs are in each state, and recent activity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueCounts {
    pub running: u64,
    /// In flight on a worker that stopped answering; recovery re-queues them.
    pub orphaned: u64,
    /// Due now, waiting for a worker.
    pub queued: u64,
    /// Waiting for a retry after a failed attempt.
    pub failed: u64,
    /// Waiting for a later time.
    pub scheduled: u64,
    pub dead: u64,
    pub done: u64,
    /// When the last job ended (seconds since the epoch; 0 if none did).
    pub latest_end: u64,
    /// Jobs that ended (done or dead) on each of the last 7 days, oldest first.
    pub activity: Vec<usize>,
}

impl BoardQueue {
    pub(super) fn new(
        storage: RedisStorage<StepJob>,
        conn: ConnectionManager,
        name: String,
        orphaned_after: Duration,
    ) -> Self {
        Self {
            storage,
            conn,
            name,
            orphaned_after,
            codec: JsonValues,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The oldest heartbeat a live worker can have, in seconds since the epoch.
    fn live_since(&self) -> u64 {
        now().saturating_sub(self.orphaned_after).as_secs()
    }

    /// A script with the queue's keys and the arguments every script starts with.
    fn invocation<'a>(&self, script: &'a redis::Script) -> redis::ScriptInvocation<'a> {
        let q = &self.name;
        let mut invocation = script.prepare_invoke();
        invocation
            .key(format!("{q}:active"))
            .key(format!("{q}:scheduled"))
            .key(format!("{q}:workers"))
            .key(format!("{q}:dead"))
            .key(format!("{q}:done"))
            .key(format!("{q}:data"))
            .arg(format!("{q}:inflight:"))
            .arg(format!("{q}:meta:"))
            .arg(self.live_since());
        invocation
    }

    async fn list(&self, filter: &Filter) -> Result<Vec<Task<Value>>, apalis_redis::Error> {
        let script = redis::Script::new(LIST);
        let limit = filter
            .page_size
            .unwrap_or(DEFAULT_PAGE_SIZE)
            .clamp(1, MAX_PAGE_SIZE);
        let offset = filter.page.max(1).saturating_sub(1).saturating_mul(limit);
        let status = filter
            .status
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        let rows: Vec<Row> = self
            .invocation(&script)
            .arg(status)
            .arg(offset)
            .arg(limit)
            .arg(now().as_secs())
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(rows.into_iter().map(|row| self.task(row)).collect())
    }

    /// Counts of jobs by state (the board's statistics; also useful on their own).
    pub async fn counts(&self) -> Result<QueueCounts, apalis_redis::Error> {
        let script = redis::Script::new(STATS);
        #[allow(clippy::type_complexity)]
        let (running, orphaned, queued, failed, scheduled, dead, done, latest_end, activity): (
            u64,
            u64,
            u64,
            u64,
            u64,
            u64,
            u64,
            u64,
            Vec<usize>,
        ) = self
            .invocation(&script)
            .arg(now().as_secs())
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(QueueCounts {
            running,
            orphaned,
            queued,
            failed,
            scheduled,
            dead,
            done,
            latest_end,
            activity,
        })
    }

    fn task(&self, (id, status, worker, data, run_at, fields): Row) -> Task<Value> {
        let meta: HashMap<String, String> = fields
            .chunks_exact(2)
            .map(|pair| {
                (
                    String::from_utf8_lossy(&pair[0]).into_owned(),
                    String::from_utf8_lossy(&pair[1]).into_owned(),
                )
            })
            .collect();
        let number = |field: &str| meta.get(field).and_then(|v| v.parse::<u64>().ok());
        // Arguments that no longer decode are shown as their text rather than hidden.
        let args = data.map_or(Value::Null, |bytes| {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        });
        let mut builder = TaskBuilder::new(args)
            .task_id(TaskId::from_str(&id).unwrap_or_else(|_| TaskId::from_string(id.clone())))
            .status(Status::from_str(&status).unwrap_or_default())
            .attempt(number("attempts").unwrap_or(0) as usize)
            .done_at(number("done_at"))
            .lock_by((!worker.is_empty()).then_some(worker))
            .queue(self.name.clone().into());
        if let Some(max) = number("max_attempts") {
            builder = builder.max_attempts(max as usize);
        }
        if let Ok(at) = run_at.parse::<f64>() {
            builder = builder.run_at_timestamp(at as u64);
        }
        if let Some(key) = meta.get("idempotency_key").filter(|k| !k.is_empty()) {
            builder = builder.idempotency_key(key);
        }
        let mut metadata = MetadataStore::default();
        if let Some(result) = meta.get("result") {
            let _ = metadata.insert("result", result.clone());
        }
        builder.with_metadata(metadata).build()
    }

    fn statistics(counts: &QueueCounts) -> Vec<Statistic> {
        let total = counts.running
            + counts.orphaned
            + counts.queued
            + counts.failed
            + counts.scheduled
            + counts.dead
            + counts.done;
        let mut stats = vec![
            ("RUNNING_JOBS", StatType::Number, counts.running.to_string()),
            (
                "PENDING_JOBS",
                StatType::Number,
                (counts.queued + counts.scheduled + counts.orphaned).to_string(),
            ),
            ("FAILED_JOBS", StatType::Number, counts.failed.to_string()),
            ("KILLED_JOBS", StatType::Number, counts.dead.to_string()),
            ("DONE_JOBS", StatType::Number, counts.done.to_string()),
            ("TOTAL_JOBS", StatType::Number, total.to_string()),
        ];
        if counts.latest_end > 0 {
            stats.push((
                "MOST_RECENT_JOB",
                StatType::Timestamp,
                counts.latest_end.to_string(),
            ));
        }
        stats
            .into_iter()
            .enumerate()
            .map(|(i, (title, stat_type, value))| Statistic {
                title: title.into(),
                stat_type,
                value,
                priority: Some(i as u64 + 1),
            })
            .collect()
    }
}

fn now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// When a worker started: agentq's worker names carry a UUIDv7 (`agentq-worker-{pid}-{uuid}-{run}`).
fn started_at(worker: &str) -> u64 {
    worker
        .split('-')
        .filter_map(|part| uuid::Uuid::try_parse(part).ok())
        .find_map(|id| id.get_timestamp())
        .map_or(0, |ts| ts.to_unix().0)
}

impl Backend for BoardQueue {
    type Task = Task<Value>;
    type Error = apalis_redis::Error;

    fn poll_ready(
        &mut self,
        _: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    /// A view, not a worker's source: it has nothing to hand out.
    fn poll_next(
        &mut self,
        _: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Option<Result<Self::Task, Self::Error>>> {
        Poll::Ready(None)
    }

    fn poll_close(
        &mut self,
        _: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
}

impl BackendConfig for BoardQueue {
    type Args = StepJob;
    type Id = String;
    type Kind = Durable;
    type Config = apalis_redis::Config;
    type Layer = ();

    fn config(&self) -> &Self::Config {
        self.storage.get_config()
    }

    fn middleware(&mut self, _: &mut WorkerContext) -> Self::Layer {}
}

impl WireFormatBackend for BoardQueue {
    type Codec = JsonValues;
    type Compact = Value;

    fn codec(&self) -> &Self::Codec {
        &self.codec
    }
}

/// Pushes go through apalis-redis's own push, as [`super::StepQueue::push`]'s do.
impl Sink<Task<Value>> for BoardQueue {
    type Error = apalis_redis::Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.get_mut().storage).poll_ready(cx)
    }

    fn start_send(self: Pin<&mut Self>, task: Task<Value>) -> Result<(), Self::Error> {
        let task = task
            .try_map_args(|args| serde_json::to_vec(&args))
            .map_err(apalis_redis::Error::Json)?;
        Pin::new(&mut self.get_mut().storage).start_send(task)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.get_mut().storage).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.get_mut().storage).poll_close(cx)
    }
}

impl FetchById for BoardQueue {
    async fn fetch_by_id(&mut self, task_id: &TaskId) -> Result<Option<Task<Value>>, Self::Error> {
        let script = redis::Script::new(FETCH);
        let row: Option<Row> = self
            .invocation(&script)
            .arg(task_id.to_string())
            .arg(now().as_secs())
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(row.map(|row| self.task(row)))
    }
}

impl ListTasks for BoardQueue {
    async fn list_tasks(&self, filter: &Filter) -> Result<Vec<Task<Value>>, Self::Error> {
        self.list(filter).await
    }
}

/// agentq has one queue, so all tasks are its tasks.
impl ListAllTasks for BoardQueue {
    async fn list_all_tasks(&self, filter: &Filter) -> Result<Vec<Task<Value>>, Self::Error> {
        self.list(filter).await
    }
}

impl ListWorkers for BoardQueue {
    async fn list_workers(&self) -> Result<Vec<RunningWorker>, Self::Error> {
        let q = &self.name;
        let rows: Vec<(String, f64, String, String)> = redis::Script::new(WORKERS)
            .key(format!("{q}:workers"))
            .arg(self.live_since())
            .arg(format!("{q}:workers:metadata:"))
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(rows
            .into_iter()
            .map(|(id, heartbeat, backend, layers)| RunningWorker {
                started_at: started_at(&id),
                id,
                queue: q.clone(),
                backend,
                last_heartbeat: heartbeat as u64,
                layers,
            })
            .collect())
    }

    async fn list_all_workers(&self) -> Result<Vec<RunningWorker>, Self::Error> {
        self.list_workers().await
    }
}

impl ListQueues for BoardQueue {
    async fn list_queues(&self) -> Result<Vec<QueueInfo>, Self::Error> {
        let counts = self.counts().await?;
        let workers = self.list_workers().await?;
        Ok(vec![QueueInfo {
            name: self.name.clone(),
            stats: Self::statistics(&counts),
            workers: workers.into_iter().map(|w| w.id).collect(),
            activity: counts.activity,
        }])
    }
}

impl Metrics for BoardQueue {
    async fn global(&self) -> Result<Vec<Statistic>, Self::Error> {
        Ok(Self::statistics(&self.counts().await?))
    }

    async fn fetch_by_queue(&self) -> Result<Vec<Statistic>, Self::Error> {
        self.global().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scripts_know_when_lane_jobs_are_due() {
        let line = format!("local LANE_AT = {} ", super::super::LANE_AT);
        for script in [LIST, FETCH, STATS] {
            assert!(script.contains(&line), "{script}");
        }
    }
}
