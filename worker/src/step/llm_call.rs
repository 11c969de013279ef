//! One LLM call of a step, with bounded retries of transient failures (429 honouring
//! `retry-after`, 529, 5xx, timeouts, connection resets): exponential backoff with jitter, at most
//! `AGENTQ_LLM_ATTEMPTS` attempts and `AGENTQ_LLM_RETRY_BUDGET_SECS` of waiting. 400/401/403/404
//! are not retried. Every attempt goes into the cost ledger, answered or not, so session totals
//! match what the provider bills: a failed attempt at once, the answered one with the decision
//! it leads to (one write for both).

use std::time::{Duration, Instant};

use agentq_shared::schemas::FailureCode;
use agentq_shared::store::{LlmCallRecord, StepRun};
use anyhow::Context as _;
use backon::{ExponentialBuilder, Retryable};
use tokio::sync::Mutex;

use super::guard::Interrupt;
use crate::Context;
use crate::llm::{LlmError, LlmRequest, LlmResponse};

pub enum LlmOutcome {
    Answered(Box<Answer>),
    /// Failed for good; the session fails with this code.
    Failed {
        code: FailureCode,
        message: String,
    },
}

/// The answer, and the ledger record of its call (not yet written: it goes in with the
/// decision).
pub struct Answer {
    pub response: LlmResponse,
    pub call: LlmCallRecord,
}

/// Why an attempt did not answer: the provider (maybe retried) or our ledger (never retried).
enum AttemptError {
    Llm(LlmError),
    Ledger(anyhow::Error),
}

pub async fn call(
    ctx: &Context,
    run: &mut StepRun,
    request: &LlmRequest,
) -> anyhow::Result<LlmOutcome> {
    let llm = &ctx.config.llm;
    let backoff = ExponentialBuilder::default()
        .with_min_delay(llm.retry_min_delay)
        .with_max_delay(Duration::from_secs(20))
        .with_max_times(llm.attempts.saturating_sub(1) as usize)
        .with_total_delay(Some(llm.retry_budget))
        .with_jitter();
    let run = Mutex::new(run);
    let result = (|| attempt(ctx, &run, request))
        .retry(backoff)
        .sleep(tokio::time::sleep)
        .when(|e| matches!(e, AttemptError::Llm(e) if e.is_transient()))
        .adjust(|e, planned| match e {
            // The provider's own retry-after wins over our schedule, within our budget.
            AttemptError::Llm(LlmError::Status {
                retry_after: Some(after),
                ..
            }) => planned.map(|_| (*after).min(llm.retry_budget)),
            _ => planned,
        })
        .notify(|e, wait| {
            if let AttemptError::Llm(e) = e {
                tracing::warn!(error = %e, ?wait, "transient LLM failure; retrying");
            }
        })
        .await;
    match result {
        Ok((response, call)) => Ok(LlmOutcome::Answered(Box::new(Answer { response, call }))),
        Err(AttemptError::Ledger(e)) => Err(e),
        Err(AttemptError::Llm(e)) => {
            let code = match e {
                LlmError::Timeout(_) => FailureCode::LlmTimeout,
                _ => FailureCode::LlmError,
            };
            Ok(LlmOutcome::Failed {
                code,
                message: e.to_string(),
            })
        }
    }
}

async fn attempt(
    ctx: &Context,
    run: &Mutex<&mut StepRun>,
    request: &LlmRequest,
) -> Result<(LlmResponse, LlmCallRecord), AttemptError> {
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
    measure(
        &request.model,
        result.is_ok(),
        started.elapsed(),
        usage,
        cost_usd,
    );
    let mut run = run.lock().await;
    let record = LlmCallRecord {
        session_id: run.session_id(),
        step_index: run.step,
        model: request.model.clone(),
        ok: result.is_ok(),
        http_status,
        usage,
        cost_usd,
        duration_ms: started.elapsed().as_millis() as u64,
        error,
    };
    match result {
        Ok(response) => Ok((response, record)),
        Err(e) => {
            ctx.store
                .record_llm_call(&mut run, &record)
                .await
                .context("recording the LLM call in the ledger")
                .map_err(AttemptError::Ledger)?;
            Err(AttemptError::Llm(e))
        }
    }
}

/// A call dropped mid-flight (cancel, deadline, lost lease) may still be billed: the ledger keeps
/// a row for it, with the tokens unknown to us recorded as zero.
pub async fn record_abandoned(
    ctx: &Context,
    run: &mut StepRun,
    model: &str,
    why: Interrupt,
) -> anyhow::Result<()> {
    let record = LlmCallRecord {
        session_id: run.session_id(),
        step_index: run.step,
        model: model.to_owned(),
        ok: false,
        http_status: None,
        usage: Default::default(),
        cost_usd: ctx.pricing.cost(model, Default::default()),
        duration_ms: 0,
        error: Some(format!("abandoned: {why:?}")),
    };
    ctx.store
        .record_llm_call(run, &record)
        .await
        .context("recording the abandoned LLM call")
}

/// The call in the metrics: count, latency, tokens and cost, by model.
fn measure(
    model: &str,
    ok: bool,
    took: std::time::Duration,
    usage: agentq_shared::schemas::Usage,
    cost: Option<rust_decimal::Decimal>,
) {
    let model = model.to_owned();
    let outcome = if ok { "ok" } else { "error" };
    metrics::counter!("agentq_llm_calls_total", "model" => model.clone(), "outcome" => outcome)
        .increment(1);
    metrics::histogram!("agentq_llm_call_duration_seconds", "model" => model.clone())
        .record(took.as_secs_f64());
    for (kind, tokens) in [
        ("input", usage.input_tokens),
        ("output", usage.output_tokens),
        ("cache_read", usage.cache_read_tokens),
        ("cache_write", usage.cache_write_tokens),
    ] {
        metrics::counter!("agentq_llm_tokens_total", "model" => model.clone(), "kind" => kind)
            .increment(tokens);
    }
    // Dollars are fractional: a gauge that only goes up (metrics counters count whole units).
    if let Some(cost) = cost.and_then(|c| rust_decimal::prelude::ToPrimitive::to_f64(&c)) {
        metrics::gauge!("agentq_llm_cost_usd_total", "model" => model).increment(cost);
    }
}
