//! The store's own instrumentation: how many round trips each operation made to the durable
//! store and how many commands to the hot copy. Counts, not timings: tests assert budgets on
//! them and benchmarks print them per step.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub struct Counters {
    durable: AtomicU64,
    hot: AtomicU64,
    by_operation: Mutex<BTreeMap<&'static str, Count>>,
}

/// Round trips to the durable store and commands to the hot copy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Count {
    pub durable: u64,
    pub hot: u64,
}

impl std::ops::Sub for Count {
    type Output = Count;

    fn sub(self, earlier: Count) -> Count {
        Count {
            durable: self.durable - earlier.durable,
            hot: self.hot - earlier.hot,
        }
    }
}

impl Counters {
    pub fn durable(&self, operation: &'static str) {
        self.durable.fetch_add(1, Ordering::Relaxed);
        self.by(operation, |c| c.durable += 1);
    }

    pub fn hot(&self, operation: &'static str) {
        self.hot.fetch_add(1, Ordering::Relaxed);
        self.by(operation, |c| c.hot += 1);
    }

    fn by(&self, operation: &'static str, bump: impl FnOnce(&mut Count)) {
        let mut map = self
            .by_operation
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        bump(map.entry(operation).or_default());
    }

    /// Totals so far.
    pub fn total(&self) -> Count {
        Count {
            durable: self.durable.load(Ordering::Relaxed),
            hot: self.hot.load(Ordering::Relaxed),
        }
    }

    /// Totals per operation so far.
    pub fn by_operation(&self) -> BTreeMap<&'static str, Count> {
        self.by_operation
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}
