use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::AppState;

/// What `/readyz` says: the overall status, and `ok` or `unavailable` for each dependency the
/// deployment has (Postgres and Redis; or, on the embedded store of `agentq dev`, SQLite alone).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// `ready` or `unavailable`.
    pub status: String,
    /// `ok` or `unavailable`; present when the durable store is Postgres.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postgres: Option<String>,
    /// `ok` or `unavailable`; present when the hot copy or the queue is on Redis.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<String>,
    /// `ok` or `unavailable`; present on the embedded store (the store's and the queue's files).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sqlite: Option<String>,
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
/// 200 when every dependency answers (Postgres and Redis, or SQLite for `agentq dev`), else 503
/// naming the one that doesn't (its error text stays in the log).
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Readiness,
            example = json!({"status": "ready", "postgres": "ok", "redis": "ok"})),
        (status = 503, description = "A dependency does not answer", body = Readiness,
            example = json!({"status": "unavailable", "postgres": "ok", "redis": "unavailable"})),
    ))]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let (store, queue) = tokio::join!(state.store.readiness(), state.queue.ping());
    // The queue answers for the dependency it lives on (Redis, or the SQLite files).
    let mut parts = store.parts;
    match parts
        .iter_mut()
        .find(|(kind, _)| *kind == state.queue.kind())
    {
        Some((_, answer)) => *answer = answer.clone().and(queue),
        None => parts.push((state.queue.kind(), queue)),
    }
    let mut body = Readiness {
        status: "ready".into(),
        postgres: None,
        redis: None,
        sqlite: None,
    };
    for (kind, answer) in &parts {
        if let Err(e) = answer {
            tracing::warn!(error = %e, "readiness: {kind} does not answer");
            body.status = "unavailable".into();
        }
        let word = Some(if answer.is_ok() { "ok" } else { "unavailable" }.to_owned());
        match *kind {
            "postgres" => body.postgres = word,
            "redis" => body.redis = word,
            "sqlite" => body.sqlite = word,
            _ => {}
        }
    }
    let status = if body.status == "ready" {
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
