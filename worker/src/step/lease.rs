//! Taking the session's lease (step protocol, 1 and 2), in the same round trip as reading the
//! whole session. A job for a finished or waiting session, or for a step that is not the
//! current one, is a duplicate: acked. If another worker holds the lease, this job waits for it
//! to run out: a job redelivered after its worker died finds the dead worker's lease still live
//! for up to one TTL. It gives up when the holder keeps renewing or moves the session on.

use std::time::{Duration, Instant};

use agentq_shared::queue::{Push, StepJob};
use agentq_shared::store::{Begin, StepRun};
use uuid::Uuid;

use crate::Context;

pub async fn take(ctx: &Context, job: StepJob) -> anyhow::Result<Option<StepRun>> {
    let StepJob {
        session_id: id,
        step: n,
        traceparent,
        org_id,
    } = job;
    let owner = format!("{}/{}", ctx.worker_name, Uuid::new_v4().simple());
    let ttl = ctx.config.durability.lease_ttl;
    let give_up = Instant::now() + ttl + ttl / 2;
    let pause = (ttl / 10).clamp(Duration::from_millis(50), Duration::from_secs(1));
    loop {
        match ctx.store.begin_step(id, n, &owner, ttl).await? {
            Begin::Leased(run) => return Ok(Some(*run)),
            Begin::Missing => {
                tracing::warn!("job for an unknown session; dropped");
                return Ok(None);
            }
            Begin::Idle(status) => {
                tracing::debug!(%status, "the session is not running; job acked");
                return Ok(None);
            }
            Begin::NotCurrent { next_step } => {
                if n + 1 == next_step {
                    // Crashed after advancing but before the push: push again (a no-op if it
                    // was pushed).
                    let mut next = StepJob::new(id, next_step, traceparent);
                    next.org_id = org_id;
                    ctx.queue.push(next, Push::Next).await?;
                }
                tracing::debug!(next_step, "not the current step; duplicate job acked");
                return Ok(None);
            }
            Begin::Held if Instant::now() >= give_up => {
                tracing::debug!(
                    "another worker holds the session and is alive; duplicate job acked"
                );
                return Ok(None);
            }
            Begin::Held => tokio::time::sleep(pause).await,
        }
    }
}
