use agentq_shared::config::{ApiConfig, Env};

/// mimalloc: the services allocate per request and per step, from many threads.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = agentq_shared::telemetry::init("agentq-api", "info");
    agentq_shared::memory::small_pages();
    let config = match ApiConfig::from_env(&Env::process()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("agentq-api: configuration error: {e}");
            std::process::exit(2);
        }
    };
    agentq_api::serve(config).await
}
