//! The step queue: one job type, `StepJob`, on an apalis-redis queue, behind [`StepQueue`], the
//! one place that makes job ids.
//!
//! The queue is only a wake-up signal: delivery is at least once, so every effect of a job is
//! keyed by `(session_id, step)` in the store. apalis-redis silently skips a push whose id it
//! still holds (FIELD_NOTES): the normal push's id is derived from `(session, step)`, so the
//! same step is never queued twice that way; a resume after approval and a repair by the
//! reconciler need ids of their own, or the skip would swallow them.

use std::time::Duration;

use apalis::prelude::{TaskBuilder, TaskId, TaskSink};
use apalis_redis::RedisStorage;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// "Make step `step` of session `session_id` happen."
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepJob {
    pub session_id: Uuid,
    pub step: u32,
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
    fn task_id(self, job: StepJob) -> TaskId {
        let StepJob { session_id, step } = job;
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
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(2),
            missed_heartbeats: 3,
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

/// The step queue.
#[derive(Clone)]
pub struct StepQueue {
    storage: RedisStorage<StepJob>,
    name: String,
}

impl StepQueue {
    /// The queue `{prefix}:steps` on the Redis at `redis_url`, on a connection of its own.
    pub async fn connect(
        redis_url: &str,
        prefix: &str,
        settings: &QueueSettings,
    ) -> anyhow::Result<Self> {
        let conn = crate::store::connect_redis(redis_url).await?;
        let name = Self::name_for(prefix);
        let config = apalis_redis::Config::default()
            .queue(name.clone())
            .heartbeat_interval(settings.heartbeat_interval)
            .missed_heartbeats(settings.missed_heartbeats);
        Ok(Self {
            storage: RedisStorage::new(conn).with_config(config),
            name,
        })
    }

    /// The queue's name for a Redis key prefix.
    pub fn name_for(prefix: &str) -> String {
        format!("{prefix}:steps")
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Pushes the job with the id its purpose gives it.
    pub async fn push(&self, job: StepJob, why: Push) -> Result<(), EnqueueError> {
        let mut storage = self.storage.clone();
        storage
            .push_task(TaskBuilder::new(job).task_id(why.task_id(job)).build())
            .await
            .map_err(|e| EnqueueError {
                session_id: job.session_id,
                step: job.step,
                message: e.to_string(),
            })
    }

    /// The storage a worker process polls (it should poll on an interval: apalis-redis's own
    /// pub/sub does not wake workers, FIELD_NOTES).
    pub fn worker_backend(&self) -> RedisStorage<StepJob> {
        self.storage.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_purpose_has_its_own_id() {
        let job = StepJob {
            session_id: Uuid::nil(),
            step: 3,
        };
        let ids: Vec<String> = [Push::Next, Push::Resume, Push::Repair { fence: 7 }]
            .into_iter()
            .map(|why| why.task_id(job).to_string())
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
