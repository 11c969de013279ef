//! Prometheus metrics: one recorder per process (`install`), rendered by `/metrics` on the API
//! and on the worker's `AGENTQ_METRICS_LISTEN`. The names, in one place:
//!
//! - `agentq_http_requests_total{route, method, status}`,
//!   `agentq_http_request_duration_seconds{route, method}` (API);
//! - `agentq_sessions_started_total`, `agentq_sessions_ended_total{status, code}`;
//! - `agentq_steps_total{outcome}`, `agentq_lease_losses_total`;
//! - `agentq_llm_calls_total{model, outcome}`, `agentq_llm_call_duration_seconds{model}`,
//!   `agentq_llm_tokens_total{model, kind}`, `agentq_llm_cost_usd_total{model}`;
//! - `agentq_tool_calls_total{tool, outcome}`, `agentq_tool_call_duration_seconds{tool}`;
//! - `agentq_queue_jobs{state}` (waiting, running, dead; read from the queue at each scrape);
//! - `agentq_reconciler_repairs_total`;
//! - `agentq_store_round_trips_total{store, operation}` (the store's own counters; `store` is
//!   `postgres` or `sqlite` for the durable store, `redis` for the hot copy).

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusBuilder;
pub use metrics_exporter_prometheus::PrometheusHandle;

use crate::queue::StepQueue;
use crate::store::Store;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Latency buckets, in seconds, for every duration histogram.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Installs this process's recorder (once; later calls return the same handle) and keeps its
/// histograms from growing without bound.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(BUCKETS)
                .unwrap_or_else(|_| unreachable!("the buckets are not empty"))
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed");
            }
            let upkeep = handle.clone();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    loop {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        upkeep.run_upkeep();
                    }
                });
            }
            handle
        })
        .clone()
}

/// The Prometheus text of this process, with the gauges read now: the queue's depth and the
/// store's counters.
pub async fn render(handle: &PrometheusHandle, store: &Store, queue: &StepQueue) -> String {
    if let Ok(depth) = queue.depth().await {
        for (state, jobs) in [
            ("waiting", depth.waiting),
            ("running", depth.running),
            ("dead", depth.dead),
        ] {
            metrics::gauge!("agentq_queue_jobs", "state" => state).set(jobs as f64);
        }
    }
    for (operation, count) in store.counters().by_operation() {
        for (which, n) in [(store.durable_kind(), count.durable), ("redis", count.hot)] {
            if n > 0 {
                metrics::counter!("agentq_store_round_trips_total", "store" => which,
                    "operation" => operation)
                .absolute(n);
            }
        }
    }
    handle.render()
}

/// A session ended (from any process: worker, API, reconciler).
pub fn session_ended(status: &str, code: Option<&str>) {
    metrics::counter!("agentq_sessions_ended_total", "status" => status.to_owned(),
        "code" => code.unwrap_or("").to_owned())
    .increment(1);
}
