use clap::Parser;

/// mimalloc: the services allocate per request and per step, from many threads.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let _telemetry = agentq_shared::telemetry::init("agentq", "warn");
    agentq_shared::memory::small_pages();
    let cli = agentq_cli::args::Cli::parse();
    match agentq_cli::commands::run(cli).await {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("agentq: {e:#}");
            std::process::exit(1);
        }
    }
}
