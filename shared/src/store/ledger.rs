//! The cost ledger: one row per LLM call, billed or failed, so totals match the provider's bill.

use rust_decimal::Decimal;
use uuid::Uuid;

use super::Store;
use crate::schemas::Usage;

#[derive(Debug, Clone)]
pub struct LlmCallRecord {
    pub session_id: Uuid,
    pub step_index: u32,
    pub model: String,
    pub ok: bool,
    pub http_status: Option<u16>,
    pub usage: Usage,
    pub cost_usd: Option<Decimal>,
    pub duration_ms: u64,
    pub error: Option<String>,
}

impl Store {
    #[tracing::instrument(skip_all, fields(session_id = %call.session_id, step = call.step_index))]
    pub async fn record_llm_call(&self, call: &LlmCallRecord) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO llm_calls (session_id, step_index, model, outcome, http_status,
                 input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cost_usd,
                 duration_ms, error)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(call.session_id)
        .bind(call.step_index as i32)
        .bind(&call.model)
        .bind(if call.ok { "ok" } else { "error" })
        .bind(call.http_status.map(i32::from))
        .bind(call.usage.input_tokens as i64)
        .bind(call.usage.output_tokens as i64)
        .bind(call.usage.cache_read_tokens as i64)
        .bind(call.usage.cache_write_tokens as i64)
        .bind(call.cost_usd)
        .bind(call.duration_ms as i64)
        .bind(&call.error)
        .execute(&self.pg)
        .await?;
        Ok(())
    }
}
