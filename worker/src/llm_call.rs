//! One LLM call of a step, with bounded retries of transient failures. Every attempt goes into
//! the cost ledger, answered or not, so session totals match what the provider bills.

use std::time::{Duration, Instant};

use agentq_shared::store::LlmCallRecord;
use anyhow::Context as _;
use uuid::Uuid;

use crate::Context;
use crate::guard::Interrupt;
use crate::llm::{LlmError, LlmRequest, LlmResponse};

pub enum LlmOutcome {
    Answered(LlmResponse),
    /// Failed for good; the session fails with this machine-readable code.
    Failed {
        code: &'static str,
        message: String,
    },
}

pub async fn call(
    ctx: &Context,
    id: Uuid,
    n: u32,
    request: &LlmRequest,
) -> anyhow::Result<LlmOutcome> {
    let attempts = ctx.config.llm.attempts.max(1);
    let mut attempt = 1;
    loop {
        let started = Instant::now();
        let result = ctx.llm.complete(request).await;
        let (usage, http_status, error) = match &result {
            Ok(response) => (response.usage, Some(response.http_status), None),
            Err(e) => (Default::default(), e.http_status(), Some(e.to_string())),
        };
        let cost_usd = ctx.pricing.cost(&request.model, usage);
        if cost_usd.is_none() {
            tracing::warn!(model = %request.model, "no price for this model: cost recorded as unknown");
        }
        ctx.store
            .record_llm_call(&LlmCallRecord {
                session_id: id,
                step_index: n,
                model: request.model.clone(),
                ok: result.is_ok(),
                http_status,
                usage,
                cost_usd,
                duration_ms: started.elapsed().as_millis() as u64,
                error,
            })
            .await
            .context("recording the LLM call in the ledger")?;
        match result {
            Ok(response) => return Ok(LlmOutcome::Answered(response)),
            Err(e) if e.is_transient() && attempt < attempts => {
                let backoff = Duration::from_millis(500 * 2u64.pow(attempt - 1));
                tracing::warn!(attempt, error = %e, ?backoff, "transient LLM failure; retrying");
                tokio::time::sleep(backoff).await;
                attempt += 1;
            }
            Err(e) => {
                let code = match e {
                    LlmError::Timeout(_) => "llm_timeout",
                    _ => "llm_error",
                };
                return Ok(LlmOutcome::Failed {
                    code,
                    message: e.to_string(),
                });
            }
        }
    }
}

/// A call dropped mid-flight (cancel, deadline, lost lease) may still be billed: the ledger keeps
/// a row for it, with the tokens unknown to us recorded as zero.
pub async fn record_abandoned(
    ctx: &Context,
    id: Uuid,
    n: u32,
    model: &str,
    why: Interrupt,
) -> anyhow::Result<()> {
    ctx.store
        .record_llm_call(&LlmCallRecord {
            session_id: id,
            step_index: n,
            model: model.to_owned(),
            ok: false,
            http_status: None,
            usage: Default::default(),
            cost_usd: ctx.pricing.cost(model, Default::default()),
            duration_ms: 0,
            error: Some(format!("abandoned: {why:?}")),
        })
        .await
        .context("recording the abandoned LLM call")
}
