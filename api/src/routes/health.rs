use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::AppState;

/// What `/readyz` says.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// `ready` or `unavailable`.
    pub status: String,
    /// `ok` or `unavailable`.
    pub postgres: String,
    /// `ok` or `unavailable`.
    pub redis: String,
}

/// Liveness.
///
/// The process answers. It checks no dependency, so a Postgres outage doesn't get every API
/// process restarted.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Alive", body = Object,
        example = json!({"status": "ok"}))))]
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Readiness.
///
/// 200 when Postgres and Redis both answer, else 503 naming the one that doesn't (its error
/// text stays in the log).
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Postgres or Redis does not answer", body = Readiness),
    ))]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let (store, queue) = tokio::join!(state.store.readiness(), state.queue.ping());
    let redis = store.hot.and(queue);
    let word = |r: &Result<(), String>| if r.is_ok() { "ok" } else { "unavailable" };
    for (what, result) in [("Postgres", &store.durable), ("Redis", &redis)] {
        if let Err(e) = result {
            tracing::warn!(error = %e, "readiness: {what} does not answer");
        }
    }
    let ready = store.durable.is_ok() && redis.is_ok();
    let body = Readiness {
        status: if ready { "ready" } else { "unavailable" }.into(),
        postgres: word(&store.durable).into(),
        redis: word(&redis).into(),
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

/// Metrics, as Prometheus text.
///
/// This process's requests, sessions, steps, LLM and tool calls, and the queue's depth read
/// now (`shared/src/metrics.rs` lists every series).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition", body = String,
        content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> String {
    agentq_shared::metrics::render(&state.metrics, &state.store, &state.queue).await
}
