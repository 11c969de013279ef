use axum::Json;
use serde_json::{Value, json};

/// Liveness: the process answers. It checks no dependency, so a Postgres outage doesn't get
/// every API process restarted.
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}
