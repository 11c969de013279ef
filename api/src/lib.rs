//! agentq-api: validates, authenticates, writes sessions, enqueues their first step, answers
//! polls from the Redis snapshot (falling back to Postgres) and takes cancel requests.

mod auth;
pub mod error;
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
}

impl AppState {
    pub async fn build(config: ApiConfig) -> anyhow::Result<Self> {
        let store = Store::connect(&config.store).await?;
        store.migrate().await?;
        let queue = StepQueue::connect(
            &config.store.redis_url,
            &config.store.redis_prefix,
            &QueueSettings::default(),
        )
        .await?;
        Ok(Self {
            tools: Arc::new(builtin_definitions(&config.tools)),
            config: Arc::new(config),
            store,
            queue,
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
        .route("/v1/tools", get(routes::tools::list))
        .route("/healthz", get(routes::health::healthz))
        .route("/readyz", get(routes::health::readyz))
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

/// Serves the API until SIGINT or SIGTERM.
pub async fn serve(config: ApiConfig) -> anyhow::Result<()> {
    let listen = config.listen;
    let state = AppState::build(config).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on AGENTQ_LISTEN={listen}"))?;
    tracing::info!(address = %listener.local_addr()?, "agentq-api listening");
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
