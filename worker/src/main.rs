use agentq_shared::config::{Env, WorkerConfig};

/// mimalloc: the services allocate per request and per step, from many threads.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = agentq_shared::telemetry::init("agentq-worker", "info");
    agentq_shared::memory::small_pages();
    let config = match WorkerConfig::from_env(&Env::process()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("agentq-worker: configuration error: {e}");
            std::process::exit(2);
        }
    };
    agentq_worker::run(config).await
}
