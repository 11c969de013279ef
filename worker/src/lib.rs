//! agentq-worker: apalis workers that pop `StepJob`s from Redis and run the step protocol
//! (`step/`), beside the reconciler (`reconciler.rs`) and the webhook sender (`webhooks.rs`).
//! Scale by running more processes; any of them can die at any moment.

pub mod llm;
pub mod prompt;
pub mod reconciler;
pub mod step;
pub mod tools;
pub mod webhooks;

use std::sync::Arc;

use agentq_shared::config::{LlmProvider, WorkerConfig};
use agentq_shared::pricing::PricingTable;
use agentq_shared::queue::{QueueSettings, StepQueue, WorkerBackend};
use agentq_shared::store::Store;
use agentq_shared::tools::ToolRegistry;
use anyhow::Context as _;
use apalis::prelude::*;

use crate::llm::LlmClient;
use crate::llm::anthropic::AnthropicClient;
use crate::llm::openai::OpenAiClient;

/// Everything a step needs, built once per process.
pub struct Context {
    pub store: Store,
    /// For pushing the next step.
    pub queue: StepQueue,
    pub tools: ToolRegistry,
    pub llm: Arc<dyn LlmClient>,
    pub pricing: PricingTable,
    pub config: WorkerConfig,
    /// Unique per process start: lease owners and apalis worker names derive from it.
    pub worker_name: String,
}

impl Context {
    pub async fn build(config: WorkerConfig) -> anyhow::Result<Self> {
        let store = Store::connect(&config.store).await?;
        let settings = QueueSettings {
            heartbeat_interval: config.durability.heartbeat,
            missed_heartbeats: config.durability.missed_heartbeats,
            batch_size: config.concurrency,
        };
        let queue = StepQueue::for_store(&config.store, &settings).await?;
        let pricing_file = std::env::var("AGENTQ_PRICING_FILE").ok();
        Ok(Self {
            tools: tools::registry(&config.tools)?,
            llm: match &config.llm.provider {
                LlmProvider::Anthropic => Arc::new(AnthropicClient::new(&config.llm)?),
                LlmProvider::OpenAi(openai) => {
                    Arc::new(OpenAiClient::new(openai, config.llm.timeout)?)
                }
            },
            pricing: PricingTable::load(pricing_file.as_deref()).context("AGENTQ_PRICING_FILE")?,
            store,
            queue,
            config,
            worker_name: format!(
                "agentq-worker-{}-{}",
                std::process::id(),
                uuid::Uuid::now_v7().simple()
            ),
        })
    }
}

/// Runs queue workers, the reconciler and the webhook sender until SIGINT or SIGTERM. A queue worker stopped by a
/// backend error (Redis restarting, say) is restarted under a new name after a short pause. On
/// SIGTERM, running steps get `AGENTQ_SHUTDOWN_GRACE_SECS` to finish; one cut short is picked up
/// again by the queue's orphan recovery or the reconciler.
pub async fn run(config: WorkerConfig) -> anyhow::Result<()> {
    run_until(config, shutdown_signal()).await
}

/// Runs queue workers and the reconciler until `shutdown` resolves (`agentq dev` runs several
/// in one process).
pub async fn run_until(
    config: WorkerConfig,
    shutdown: impl Future<Output = std::io::Result<()>> + Send + 'static,
) -> anyhow::Result<()> {
    tools::sql_query::check(&config.tools.sql_query).await?;
    let metrics = agentq_shared::metrics::install();
    let ctx = Arc::new(Context::build(config).await?);
    if let Some(listen) = ctx.config.metrics_listen {
        serve_metrics(listen, metrics, ctx.clone()).await?;
    }
    let instance = ctx.worker_name.clone();
    let sender = webhooks::Sender::new(&ctx.config.webhooks, &ctx.config.tools.web_fetch)?;
    tokio::spawn(reconciler::run(ctx.clone()));
    tokio::spawn(webhooks::run(ctx.clone(), sender));
    tracing::info!(
        worker = %instance,
        queue = %ctx.queue.name(),
        tools = ?ctx.tools.names(),
        llm = ?ctx.config.llm.provider,
        anthropic_base_url = %ctx.config.llm.base_url,
        "worker starting"
    );
    let poll_interval = ctx.config.poll_interval;
    let concurrency = ctx.config.concurrency;
    let grace = ctx.config.durability.shutdown_grace;
    // One apalis worker per registration, the same chain on either queue back end.
    macro_rules! step_worker {
        ($storage:expr) => {{
            let (ctx, storage) = (ctx.clone(), $storage);
            move |run| {
                WorkerBuilder::new(format!("{instance}-{run}"))
                    .backend(
                        storage
                            .clone()
                            .poll_with_stream(ctx.queue.fetch_signals(poll_interval)),
                    )
                    .data(ctx.clone())
                    .concurrency(concurrency)
                    .parallelize(tokio::spawn)
                    .build(step::handle)
            }
        }};
    }
    let monitor = match ctx.queue.worker_backend() {
        WorkerBackend::Redis(storage) => Monitor::new().register(step_worker!(storage)),
        WorkerBackend::Sqlite(storage) => Monitor::new().register(step_worker!(storage)),
    };
    monitor
        .should_restart(|worker, error| {
            tracing::warn!(worker = %worker.name(), %error, "queue worker stopped; restarting it");
            // Don't spin while the queue's store is down: the callback runs before the restart.
            std::thread::sleep(std::time::Duration::from_millis(500));
            true
        })
        .shutdown_timeout(grace)
        .run_with_signal(shutdown)
        .await
        .context("running queue workers")
}

/// `/metrics` on its own listener (`AGENTQ_METRICS_LISTEN`), in the background.
async fn serve_metrics(
    listen: std::net::SocketAddr,
    handle: agentq_shared::metrics::PrometheusHandle,
    ctx: Arc<Context>,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on AGENTQ_METRICS_LISTEN={listen}"))?;
    tracing::info!(address = %listener.local_addr()?, "worker metrics on /metrics");
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let (handle, ctx) = (handle.clone(), ctx.clone());
            async move { agentq_shared::metrics::render(&handle, &ctx.store, &ctx.queue).await }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the metrics listener stopped");
        }
    });
    Ok(())
}

async fn shutdown_signal() -> std::io::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result?,
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    Ok(())
}
