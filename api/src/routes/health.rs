use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::AppState;

/// Liveness: the process answers. It checks no dependency, so a Postgres outage doesn't get
/// every API process restarted.
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Readiness: 200 when Postgres and Redis both answer, else 503 naming the one that doesn't
/// (without its error text, which stays in the log).
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let (store, queue) = tokio::join!(state.store.readiness(), state.queue.ping());
    let redis = store.hot.and(queue);
    let word = |r: &Result<(), String>| if r.is_ok() { "ok" } else { "unavailable" };
    for (what, result) in [("Postgres", &store.durable), ("Redis", &redis)] {
        if let Err(e) = result {
            tracing::warn!(error = %e, "readiness: {what} does not answer");
        }
    }
    let ready = store.durable.is_ok() && redis.is_ok();
    let body = json!({
        "status": if ready { "ready" } else { "unavailable" },
        "postgres": word(&store.durable),
        "redis": word(&redis),
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

/// Prometheus text: this process's metrics, the queue's depth read now.
pub async fn metrics(State(state): State<AppState>) -> String {
    agentq_shared::metrics::render(&state.metrics, &state.store, &state.queue).await
}
