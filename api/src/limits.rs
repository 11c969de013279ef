//! Each org's API rate limit: a GCRA bucket per org (governor), keyed by the org the key belongs
//! to and never by peer address (behind a proxy every client would share one bucket). An org's
//! own limit (stored with the org, `agentq admin rate-limit`) replaces the deployment's default.
//! Buckets live in this API process: with several replicas behind a balancer an org gets up to
//! that many times its rate.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use agentq_shared::store::{Principal, RateLimit};
use governor::clock::{Clock, DefaultClock};
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use moka::sync::Cache;
use uuid::Uuid;

type Bucket = RateLimiter<NotKeyed, InMemoryState, DefaultClock>;

/// Orgs with a bucket at once; an org idle for this long starts again with a full burst.
const ORGS: u64 = 100_000;
const IDLE: Duration = Duration::from_secs(600);

pub struct RateLimits {
    default: Option<RateLimit>,
    buckets: Cache<Uuid, (RateLimit, Arc<Bucket>)>,
    clock: DefaultClock,
}

impl RateLimits {
    /// `None` turns every limit off.
    pub fn new(default: Option<RateLimit>) -> Self {
        Self {
            default,
            buckets: Cache::builder()
                .max_capacity(ORGS)
                .time_to_idle(IDLE)
                .build(),
            clock: DefaultClock::default(),
        }
    }

    /// Takes one request from the caller's org; `Err` says how long until one would pass.
    pub fn check(&self, principal: &Principal) -> Result<(), Duration> {
        let Some(default) = self.default else {
            return Ok(());
        };
        let limit = principal.rate_limit.unwrap_or(default);
        let fresh = || (limit, Arc::new(RateLimiter::direct(quota(limit))));
        let (held, mut bucket) = self.buckets.get_with(principal.org_id, fresh);
        if held != limit {
            // The org's limit changed: start its new bucket full.
            let replaced = fresh();
            bucket = replaced.1.clone();
            self.buckets.insert(principal.org_id, replaced);
        }
        bucket
            .check()
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

fn quota(limit: RateLimit) -> Quota {
    let per_sec = NonZeroU32::new(limit.per_sec).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(limit.burst).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(per_sec).allow_burst(burst)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(org: Uuid, rate_limit: Option<RateLimit>) -> Principal {
        Principal {
            org_id: org,
            key_id: Uuid::now_v7(),
            rate_limit,
            active_cap: None,
            expires_at: None,
        }
    }

    #[test]
    fn each_org_has_its_own_burst_and_its_own_limit_wins() {
        let limits = RateLimits::new(Some(RateLimit {
            per_sec: 1,
            burst: 3,
        }));
        let (a, b) = (
            principal(Uuid::now_v7(), None),
            principal(Uuid::now_v7(), None),
        );
        for _ in 0..3 {
            assert!(limits.check(&a).is_ok());
        }
        let wait = limits.check(&a).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert!(limits.check(&b).is_ok(), "another org is not slowed");
        // A limit of its own replaces the default, with a fresh bucket.
        let own = RateLimit {
            per_sec: 1,
            burst: 5,
        };
        let a = principal(a.org_id, Some(own));
        for _ in 0..5 {
            assert!(limits.check(&a).is_ok());
        }
        assert!(limits.check(&a).is_err());
    }

    #[test]
    fn no_default_means_no_limit() {
        let limits = RateLimits::new(None);
        let own = Some(RateLimit {
            per_sec: 1,
            burst: 1,
        });
        let a = principal(Uuid::now_v7(), own);
        for _ in 0..100 {
            assert!(limits.check(&a).is_ok());
        }
    }
}
