//! Runs the slow parts of a step (the LLM call, the tool) under watch: the lease is renewed every
//! third of its TTL, and the work is dropped — stopping the HTTP request or the tool — as soon as
//! the session is cancelled, its deadline passes, or the lease is lost.

use std::future::Future;
use std::time::Instant;

use agentq_shared::store::Lease;
use chrono::{DateTime, Utc};

use crate::Context;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interrupt {
    Cancelled,
    DeadlinePassed,
    LeaseLost,
}

/// Runs `work` unless interrupted first.
pub async fn guarded<T>(
    ctx: &Context,
    lease: &Lease,
    deadline: DateTime<Utc>,
    work: impl Future<Output = T>,
) -> Result<T, Interrupt> {
    tokio::select! {
        output = work => Ok(output),
        interrupt = watch(ctx, lease, deadline) => Err(interrupt),
    }
}

async fn watch(ctx: &Context, lease: &Lease, deadline: DateTime<Utc>) -> Interrupt {
    let durability = &ctx.config.durability;
    let renew_every = durability.lease_ttl / 3;
    let mut renew_at = Instant::now() + renew_every;
    loop {
        tokio::time::sleep(durability.cancel_poll).await;
        if let Ok(true) = ctx.store.cancel_flagged(lease.session_id).await {
            return Interrupt::Cancelled;
        }
        if Utc::now() >= deadline {
            return Interrupt::DeadlinePassed;
        }
        if Instant::now() < renew_at {
            continue;
        }
        renew_at = Instant::now() + renew_every;
        match ctx.store.renew_lease(lease, durability.lease_ttl).await {
            Ok(true) => {}
            Ok(false) => return Interrupt::LeaseLost,
            Err(e) => tracing::warn!(error = %e, "cannot renew the lease; will retry"),
        }
        // Postgres holds the flag even if Redis lost it.
        if let Ok(true) = ctx.store.cancel_requested(lease.session_id).await {
            return Interrupt::Cancelled;
        }
    }
}
