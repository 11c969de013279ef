//! The cost ledger: one row per LLM call, billed or failed, so totals match the provider's bill.

use rust_decimal::Decimal;
use uuid::Uuid;

use super::{Store, pg_safe};
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
        let model = pg_safe::text(&call.model);
        let error = pg_safe::opt_text(call.error.as_deref());
        sqlx::query!(
            "INSERT INTO llm_calls (session_id, step_index, model, outcome, http_status,
                 input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cost_usd,
                 duration_ms, error, cache_write_1h_tokens)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            call.session_id,
            call.step_index as i32,
            model.as_ref(),
            if call.ok { "ok" } else { "error" },
            call.http_status.map(i32::from),
            call.usage.input_tokens as i64,
            call.usage.output_tokens as i64,
            call.usage.cache_read_tokens as i64,
            call.usage.cache_write_tokens as i64,
            call.cost_usd,
            call.duration_ms as i64,
            error.as_deref(),
            call.usage.cache_write_1h_tokens as i64,
        )
        .execute(&self.pg)
        .await?;
        Ok(())
    }

    /// What a session has spent so far, from the ledger: tokens and USD (`None` when a call had
    /// no price).
    pub async fn spent(&self, session_id: Uuid) -> sqlx::Result<(Usage, Option<Decimal>)> {
        let spent = sqlx::query!(
            r#"SELECT coalesce(sum(input_tokens), 0)::bigint AS "input!",
                    coalesce(sum(output_tokens), 0)::bigint AS "output!",
                    coalesce(sum(cache_read_tokens), 0)::bigint AS "read!",
                    coalesce(sum(cache_write_tokens), 0)::bigint AS "write!",
                    coalesce(bool_or(cost_usd IS NULL), false) AS "unpriced!",
                    coalesce(sum(cost_usd), 0) AS "cost!"
             FROM llm_calls WHERE session_id = $1"#,
            session_id,
        )
        .fetch_one(&self.pg)
        .await?;
        let usage = Usage {
            input_tokens: spent.input as u64,
            output_tokens: spent.output as u64,
            cache_read_tokens: spent.read as u64,
            cache_write_tokens: spent.write as u64,
            cache_write_1h_tokens: 0,
        };
        Ok((usage, (!spent.unpriced).then_some(spent.cost)))
    }
}
