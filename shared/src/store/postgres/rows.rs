//! Rows as the queries return them, and their domain types.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Deserialize;
use sqlx::types::Json;
use uuid::Uuid;

use super::super::error::StoreError;
use super::super::model::{Head, SessionRecord, SessionState, Spend, StepRecord};
use crate::schemas::{FailureCode, SessionError, SessionStatus, Usage, ValidatedRun};

pub(super) fn status(s: &str) -> Result<SessionStatus, StoreError> {
    SessionStatus::parse(s).ok_or_else(|| StoreError::Backend(format!("unknown status {s:?}")))
}

pub(super) fn error(code: Option<String>, message: Option<String>) -> Option<SessionError> {
    code.map(|code| SessionError {
        code: FailureCode::parse(&code),
        message: message.unwrap_or_default(),
    })
}

/// A session's columns (queries alias theirs to these names).
pub(super) struct SessionRow {
    pub id: Uuid,
    pub org_id: Uuid,
    pub status: String,
    pub request: Json<ValidatedRun>,
    pub next_step: i32,
    pub final_answer: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub cancel_requested: bool,
    pub version: i64,
    pub deadline_at: DateTime<Utc>,
    pub approval_expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl SessionRow {
    pub fn record(self) -> Result<SessionRecord, StoreError> {
        Ok(SessionRecord {
            id: self.id,
            org_id: self.org_id,
            status: status(&self.status)?,
            run: self.request.0,
            next_step: self.next_step.max(0) as u32,
            final_answer: self.final_answer,
            error: error(self.error_code, self.error_message),
            cancel_requested: self.cancel_requested,
            version: self.version,
            deadline_at: self.deadline_at,
            approval_expires_at: self.approval_expires_at,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// The session-level columns a transition returns.
pub(super) struct HeadRow {
    pub id: Uuid,
    pub status: String,
    pub next_step: i32,
    pub final_answer: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub cancel_requested: bool,
    pub version: i64,
    pub approval_expires_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

impl HeadRow {
    pub fn head(self) -> Result<Head, StoreError> {
        Ok(Head {
            id: self.id,
            status: status(&self.status)?,
            next_step: self.next_step.max(0) as u32,
            final_answer: self.final_answer,
            error: error(self.error_code, self.error_message),
            cancel_requested: self.cancel_requested,
            version: self.version,
            approval_expires_at: self.approval_expires_at,
            updated_at: self.updated_at,
        })
    }
}

/// One entry of `agentq_spend_json`.
#[derive(Debug, Deserialize)]
pub(super) struct SpendRow {
    step: u32,
    calls: u32,
    input_tokens: u64,
    output_tokens: u64,
    cache_read_tokens: u64,
    cache_write_tokens: u64,
    cache_write_1h_tokens: u64,
    unpriced: bool,
    cost_usd: Option<String>,
}

impl SpendRow {
    fn spend(&self) -> Result<(u32, Spend), StoreError> {
        let cost = match (&self.cost_usd, self.unpriced) {
            (_, true) => None,
            (None, false) => Some(Decimal::ZERO),
            (Some(text), false) => Some(text.parse::<Decimal>().map_err(|e| {
                StoreError::Backend(format!("unreadable cost {text:?} in the ledger: {e}"))
            })?),
        };
        Ok((
            self.step,
            Spend {
                calls: self.calls,
                usage: Usage {
                    input_tokens: self.input_tokens,
                    output_tokens: self.output_tokens,
                    cache_read_tokens: self.cache_read_tokens,
                    cache_write_tokens: self.cache_write_tokens,
                    cache_write_1h_tokens: self.cache_write_1h_tokens,
                },
                cost_usd: cost,
            },
        ))
    }
}

pub(super) fn state(
    row: SessionRow,
    steps: Vec<StepRecord>,
    spend: Vec<SpendRow>,
) -> Result<SessionState, StoreError> {
    Ok(SessionState {
        record: row.record()?,
        steps,
        spend: spend
            .iter()
            .map(SpendRow::spend)
            .collect::<Result<_, _>>()?,
    })
}

pub(super) fn step(json: serde_json::Value) -> Result<StepRecord, StoreError> {
    serde_json::from_value(json)
        .map_err(|e| StoreError::Backend(format!("unreadable step row: {e}")))
}
