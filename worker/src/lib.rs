//! agentq-worker: apalis workers that pop `StepJob`s from Redis and run the step protocol
//! (`step.rs`). Scale by running more processes; any of them can die at any moment.

pub mod llm;
pub mod prompt;
pub mod step;
pub mod tools;

use std::sync::Arc;

use agentq_shared::config::WorkerConfig;
use agentq_shared::pricing::PricingTable;
use agentq_shared::queue::{self, QueueSettings, StepStorage};
use agentq_shared::store::{self, Store};
use agentq_shared::tools::ToolRegistry;
use anyhow::Context as _;
use apalis::prelude::*;

use crate::llm::LlmClient;
use crate::llm::anthropic::AnthropicClient;

/// Everything a step needs, built once per process.
pub struct Context {
    pub store: Store,
    /// For pushing the next step.
    pub queue: StepStorage,
    pub tools: ToolRegistry,
    pub llm: Arc<dyn LlmClient>,
    pub pricing: PricingTable,
    pub config: WorkerConfig,
}

impl Context {
    pub async fn build(config: WorkerConfig) -> anyhow::Result<Self> {
        let store = Store::connect(&config.store).await?;
        let queue_conn = store::connect_redis(&config.store.redis_url).await?;
        let queue = queue::storage(queue_conn, store.redis_prefix(), &QueueSettings::default());
        let pricing_file = std::env::var("AGENTQ_PRICING_FILE").ok();
        Ok(Self {
            tools: tools::registry(&config.tools)?,
            llm: Arc::new(AnthropicClient::new(&config.llm)?),
            pricing: PricingTable::load(pricing_file.as_deref()).context("AGENTQ_PRICING_FILE")?,
            store,
            queue,
            config,
        })
    }
}

/// Runs queue workers until SIGINT or SIGTERM. A worker stopped by a backend error (Redis
/// restarting, say) is restarted under a new name.
pub async fn run(config: WorkerConfig) -> anyhow::Result<()> {
    let ctx = Arc::new(Context::build(config).await?);
    let instance = format!(
        "agentq-worker-{}-{}",
        std::process::id(),
        uuid::Uuid::now_v7().simple()
    );
    tracing::info!(
        worker = %instance,
        queue = %queue::queue_name(ctx.store.redis_prefix()),
        tools = ?ctx.tools.names(),
        llm = %ctx.config.llm.base_url,
        "worker starting"
    );
    let poll_interval = ctx.config.poll_interval;
    let concurrency = ctx.config.concurrency;
    Monitor::new()
        .register(move |run| {
            WorkerBuilder::new(format!("{instance}-{run}"))
                .backend(ctx.queue.clone().poll_with_interval(poll_interval))
                .data(ctx.clone())
                .concurrency(concurrency)
                .parallelize(tokio::spawn)
                .build(step::handle)
        })
        .should_restart(|worker, error| {
            tracing::warn!(worker = %worker.name(), %error, "queue worker stopped; restarting it");
            true
        })
        .shutdown_timeout(std::time::Duration::from_secs(30))
        .run_with_signal(shutdown_signal())
        .await
        .context("running queue workers")
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
