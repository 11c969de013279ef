//! Verified API keys, remembered for a short while (`AGENTQ_AUTH_CACHE_SECS`), so a poll costs
//! no database round trip. Only keys that verified are kept, by their SHA-256; a revoked key
//! stops working within that time.

use std::time::Duration;

use moka::sync::Cache;

use super::model::Principal;

/// Most keys remembered per process.
const CAPACITY: u64 = 10_000;

pub(super) struct KeyCache {
    keys: Option<Cache<String, Principal>>,
}

impl KeyCache {
    /// A zero TTL turns the cache off.
    pub fn new(ttl: Duration) -> Self {
        Self {
            keys: (!ttl.is_zero()).then(|| {
                Cache::builder()
                    .max_capacity(CAPACITY)
                    .time_to_live(ttl)
                    .build()
            }),
        }
    }

    pub fn get(&self, key_hash: &str) -> Option<Principal> {
        self.keys.as_ref()?.get(key_hash)
    }

    pub fn insert(&self, key_hash: String, principal: Principal) {
        if let Some(keys) = &self.keys {
            keys.insert(key_hash, principal);
        }
    }
}
