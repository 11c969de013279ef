//! What the reconciler asks of the store: leadership, stalled sessions, lapsed approvals and
//! deadlines (whose endings reach the hot copy here), old idempotency keys.

use std::time::Duration;

use uuid::Uuid;

use super::Store;
use super::durable::Leadership;
use super::error::StoreResult;
use super::model::{LapsedApproval, Repair, Summary};

impl Store {
    /// Leadership of the reconciler, if no other process holds it.
    pub async fn lead(&self) -> StoreResult<Option<Box<dyn Leadership>>> {
        self.durable.lead().await
    }

    /// Claims sessions nobody is moving (no live lease, no change for `idle`) for re-enqueueing.
    pub async fn claim_stalled(&self, idle: Duration, limit: i64) -> StoreResult<Vec<Repair>> {
        self.durable.claim_stalled(idle, limit).await
    }

    /// Fails every session whose approval window closed; returns their ids.
    pub async fn expire_lapsed_approvals(&self) -> StoreResult<Vec<Uuid>> {
        let heads = self.durable.expire_lapsed_approvals().await?;
        for head in &heads {
            Self::ended(head);
            self.catch_up(head, |_| {}).await;
        }
        Ok(heads.iter().map(|h| h.id).collect())
    }

    /// Up to `limit` held turns whose approval window closed undecided and whose session chose
    /// `reject` or `approve` for that case (the reconciler applies it with
    /// [`Store::decide_approval`]).
    pub async fn lapsed_approvals(&self, limit: i64) -> StoreResult<Vec<LapsedApproval>> {
        self.durable.lapsed_approvals(limit).await
    }

    /// Fails every unfinished session past its deadline that no worker holds; returns their ids.
    pub async fn fail_overdue(&self) -> StoreResult<Vec<Uuid>> {
        let heads = self.durable.fail_overdue().await?;
        for head in &heads {
            Self::ended(head);
            self.catch_up(head, |_| {}).await;
        }
        Ok(heads.iter().map(|h| h.id).collect())
    }

    /// Creates an empty database beside this one (benchmarks make their own).
    pub async fn create_database(&self, name: &str) -> StoreResult<()> {
        self.durable.create_database(name).await
    }

    pub async fn drop_database(&self, name: &str) -> StoreResult<()> {
        self.durable.drop_database(name).await
    }

    /// Transactions committed in this database so far (benchmarks count them per step).
    pub async fn transactions_committed(&self) -> StoreResult<u64> {
        self.durable.transactions_committed().await
    }

    /// Sessions by status and steps, counted (reads every session and step).
    pub async fn summary(&self) -> StoreResult<Summary> {
        self.durable.summary().await
    }

    /// Sessions not yet finished, counted from an index of just those (cheap to poll).
    pub async fn unfinished(&self) -> StoreResult<u64> {
        self.durable.unfinished().await
    }

    /// The worker (process and attempt) holding a live lease on the session, if any.
    pub async fn lease_holder(&self, id: Uuid) -> StoreResult<Option<String>> {
        self.durable.lease_holder(id).await
    }

    /// Forgets idempotency keys older than `keep`.
    pub async fn forget_idempotency_keys(&self, keep: Duration) -> StoreResult<u64> {
        self.durable.forget_idempotency_keys(keep).await
    }
}
