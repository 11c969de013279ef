//! The queue contract between API and workers: one job type, `StepJob`, on an apalis-redis queue.
//!
//! The queue is only a wake-up signal: delivery is at least once, so every effect of a job is keyed
//! by `(session_id, step)` in Postgres. A job's task id is derived from that key, and apalis-redis
//! drops a push whose id it already holds, so the normal path never queues the same step twice.

use std::time::Duration;

use apalis::prelude::{TaskBuilder, TaskId, TaskSink};
use apalis_redis::{ConnectionManager, RedisStorage};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// "Make step `step` of session `session_id` happen."
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepJob {
    pub session_id: Uuid,
    pub step: u32,
}

impl StepJob {
    /// The id of the normal push of this step.
    pub fn task_id(&self) -> TaskId {
        TaskId::from_string(format!("{}:{}", self.session_id, self.step))
    }
}

pub type StepStorage = RedisStorage<StepJob>;

/// Liveness settings of the Redis queue (FIELD_NOTES: the defaults recover orphans after 5 min).
#[derive(Debug, Clone)]
pub struct QueueSettings {
    pub heartbeat_interval: Duration,
    pub missed_heartbeats: usize,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(2),
            missed_heartbeats: 3,
        }
    }
}

pub fn queue_name(redis_prefix: &str) -> String {
    format!("{redis_prefix}:steps")
}

pub fn storage(
    conn: ConnectionManager,
    redis_prefix: &str,
    settings: &QueueSettings,
) -> StepStorage {
    let config = apalis_redis::Config::default()
        .queue(queue_name(redis_prefix))
        .heartbeat_interval(settings.heartbeat_interval)
        .missed_heartbeats(settings.missed_heartbeats);
    RedisStorage::new(conn).with_config(config)
}

#[derive(Debug, thiserror::Error)]
#[error("cannot enqueue step {step} of session {session_id}: {message}")]
pub struct EnqueueError {
    pub session_id: Uuid,
    pub step: u32,
    pub message: String,
}

/// Pushes the job with its `(session, step)` id; a push of an id still held is a no-op.
pub async fn enqueue(storage: &StepStorage, job: StepJob) -> Result<(), EnqueueError> {
    enqueue_as(storage, job, job.task_id()).await
}

/// Pushes the job under another id: a repair (`…:r{fence}`) or a resume after approval, which
/// must not be swallowed by the normal push's id that apalis-redis still holds.
pub async fn enqueue_as(
    storage: &StepStorage,
    job: StepJob,
    task_id: TaskId,
) -> Result<(), EnqueueError> {
    let mut storage = storage.clone();
    storage
        .push_task(TaskBuilder::new(job).task_id(task_id).build())
        .await
        .map_err(|e| EnqueueError {
            session_id: job.session_id,
            step: job.step,
            message: e.to_string(),
        })
}
