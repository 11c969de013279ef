//! Verified API keys, remembered for a short while (`AGENTQ_AUTH_CACHE_SECS`, 5 s by default), so
//! a poll costs no database round trip. Only keys that verified are kept, by their SHA-256 (keys
//! are never compared, only digests: a lookup's timing says nothing about a key); a key revoked
//! elsewhere stops working here within that time, an expired one at once.

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
                    .support_invalidation_closures()
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

    pub fn forget(&self, key_hash: &str) {
        if let Some(keys) = &self.keys {
            keys.invalidate(key_hash);
        }
    }

    /// Forgets the key with this id, however it was presented.
    pub fn forget_key(&self, id: uuid::Uuid) {
        if let Some(keys) = &self.keys {
            let _ = keys.invalidate_entries_if(move |_, p| p.key_id == id);
        }
    }
}
