//! agentq-api: validates, authenticates, writes sessions, enqueues their first step, answers
//! polls from the Redis snapshot (falling back to Postgres) and takes cancel requests.

pub mod admin;
mod auth;
pub mod error;
mod limits;
pub mod openapi;
pub mod routes;

use std::sync::Arc;

use agentq_shared::config::ApiConfig;
use agentq_shared::queue::{QueueSettings, StepQueue};
use agentq_shared::store::Store;
use agentq_shared::tools::{ToolDefinition, builtin_definitions};
use anyhow::Context as _;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post};
use tower_http::trace::TraceLayer;

use crate::error::ApiError;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub queue: StepQueue,
    pub tools: Arc<Vec<ToolDefinition>>,
    pub config: Arc<ApiConfig>,
    pub metrics: agentq_shared::metrics::PrometheusHandle,
    pub limits: Arc<limits::RateLimits>,
    /// What a run's `webhook_url` is checked against: web_fetch's SSRF policy, with its lists.
    pub webhook_policy: Arc<agentq_shared::ssrf::Policy>,
}

impl AppState {
    pub async fn build(config: ApiConfig) -> anyhow::Result<Self> {
        let store = Store::connect(&config.store).await?;
        store.migrate().await?;
        // A worker that dies between ending a session and writing its snapshot leaves the
        // snapshot behind; the API sees every end and repairs that.
        store.follow_endings().await;
        let settings = QueueSettings {
            heartbeat_interval: config.heartbeat,
            missed_heartbeats: config.missed_heartbeats,
            ..QueueSettings::default()
        };
        let queue = StepQueue::for_store(&config.store, &settings).await?;
        let lists = &config.tools.web_fetch;
        let webhook_policy = agentq_shared::ssrf::Policy::new(&lists.allow, &lists.deny)?;
        Ok(Self {
            webhook_policy: Arc::new(webhook_policy),
            limits: Arc::new(limits::RateLimits::new(config.rate_limit)),
            tools: Arc::new(builtin_definitions(&config.tools)),
            config: Arc::new(config),
            store,
            queue,
            metrics: agentq_shared::metrics::install(),
        })
    }

    fn tool_names(&self) -> Vec<String> {
        self.tools.iter().map(|t| t.name.clone()).collect()
    }
}

pub fn app(state: AppState) -> Router {
    let body_limit = state.config.max_body_bytes;
    Router::new()
        .route("/v1/agents", get(routes::agents::list))
        .route("/v1/agents/run", post(routes::agents::run))
        .route("/v1/agents/{id}", get(routes::agents::get))
        .route("/v1/agents/{id}/events", get(routes::events::stream))
        .route("/v1/agents/{id}/cancel", post(routes::agents::cancel))
        .route("/v1/agents/{id}/approve", post(routes::agents::approve))
        .route("/v1/agents/{id}/webhooks", get(routes::webhooks::list))
        .route("/v1/tools", get(routes::tools::list))
        .route("/healthz", get(routes::health::healthz))
        .route("/readyz", get(routes::health::readyz))
        .route("/metrics", get(routes::health::metrics))
        .route("/openapi.json", get(openapi::spec))
        .route("/docs", get(openapi::docs))
        .route("/ui", get(routes::ui::page))
        .route("/ui/", get(routes::ui::slash))
        .route("/ui/app.js", get(routes::ui::script))
        .route("/ui/app.css", get(routes::ui::style))
        .route_layer(axum::middleware::from_fn(measure))
        .fallback(|| async {
            ApiError::client(StatusCode::NOT_FOUND, "not_found", "no such route")
        })
        .method_not_allowed_fallback(|| async {
            ApiError::client(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this route",
            )
        })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Every routed request in the metrics: count by route, method and status; latency.
async fn measure(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(String::new, |p| p.as_str().to_owned());
    let method = request.method().to_string();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    metrics::histogram!("agentq_http_request_duration_seconds", "route" => route.clone(),
        "method" => method.clone())
    .record(started.elapsed().as_secs_f64());
    metrics::counter!("agentq_http_requests_total", "route" => route, "method" => method,
        "status" => response.status().as_u16().to_string())
    .increment(1);
    response
}

/// Starts the admin listener (the apalis board) in the background when
/// `AGENTQ_ADMIN_LISTEN` is set.
pub async fn start_admin(state: &AppState) -> anyhow::Result<()> {
    if let Some(admin) = state.config.admin.clone() {
        admin::serve(&admin, state.queue.board()).await?;
    }
    Ok(())
}

/// Serves the API until SIGINT or SIGTERM.
pub async fn serve(config: ApiConfig) -> anyhow::Result<()> {
    let listen = config.listen;
    let state = AppState::build(config).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on AGENTQ_LISTEN={listen}"))?;
    tracing::info!(address = %listener.local_addr()?, "agentq-api listening");
    start_admin(&state).await?;
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving HTTP")
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
    tracing::info!("shutting down");
}
