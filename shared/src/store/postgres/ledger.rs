//! The cost ledger: one row per LLM call, billed or failed, so totals match the provider's bill.

use std::borrow::Cow;

use rust_decimal::Decimal;
use sqlx::PgPool;

use super::super::error::StoreResult;
use super::super::model::{LlmCallRecord, Spend};
use super::super::storable;

/// A ledger row's values as bound to a statement.
pub(super) struct Bound<'a> {
    pub model: Cow<'a, str>,
    pub outcome: &'static str,
    pub http_status: Option<i32>,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_write_tokens: i64,
    pub cache_write_1h_tokens: i64,
    pub cost_usd: Option<Decimal>,
    pub duration_ms: i64,
    pub error: Option<Cow<'a, str>>,
}

impl<'a> Bound<'a> {
    pub fn new(call: &'a LlmCallRecord) -> Self {
        Self {
            model: storable::text(&call.model),
            outcome: if call.ok { "ok" } else { "error" },
            http_status: call.http_status.map(i32::from),
            input_tokens: call.usage.input_tokens as i64,
            output_tokens: call.usage.output_tokens as i64,
            cache_read_tokens: call.usage.cache_read_tokens as i64,
            cache_write_tokens: call.usage.cache_write_tokens as i64,
            cache_write_1h_tokens: call.usage.cache_write_1h_tokens as i64,
            cost_usd: call.cost_usd,
            duration_ms: call.duration_ms as i64,
            error: storable::opt_text(call.error.as_deref()),
        }
    }
}

pub(super) async fn record(pool: &PgPool, call: &LlmCallRecord) -> StoreResult<()> {
    let b = Bound::new(call);
    sqlx::query!(
        "INSERT INTO llm_calls (session_id, step_index, model, outcome, http_status,
             input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cost_usd,
             duration_ms, error, cache_write_1h_tokens)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        call.session_id,
        call.step_index as i32,
        b.model.as_ref(),
        b.outcome,
        b.http_status,
        b.input_tokens,
        b.output_tokens,
        b.cache_read_tokens,
        b.cache_write_tokens,
        b.cost_usd,
        b.duration_ms,
        b.error.as_deref(),
        b.cache_write_1h_tokens,
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// What one call adds to its step's spend.
pub(super) fn spend_of(call: &LlmCallRecord) -> Spend {
    Spend {
        calls: 1,
        usage: call.usage,
        cost_usd: call.cost_usd,
    }
}
