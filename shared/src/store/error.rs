//! The store's one error type. Callers match on what happened, never on a driver's error.

use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A write refused because the writer no longer holds the session's lease: whoever took it
    /// over carries the session on.
    #[error("lease of session {0} lost to another worker")]
    LeaseLost(Uuid),
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The change conflicts with the state it found (the message says how).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The backing store cannot be reached or did not answer in time: worth retrying.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// The backing store refused the operation or returned what cannot be read.
    #[error("the store failed: {0}")]
    Backend(String),
}

impl StoreError {
    pub fn is_lease_lost(&self) -> bool {
        matches!(self, Self::LeaseLost(_))
    }
}

pub type StoreResult<T> = Result<T, StoreError>;
