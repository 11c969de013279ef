//! p50/p95 latency of `print(1)` end to end through the `code_run` tool (arguments in, JSON
//! result out), per backend: Docker with and without pre-created containers, and the process
//! backend. Docker is skipped when no engine answers. `cargo bench -p agentq-worker --bench
//! code_run` (deploy/bench.sh runs every bench). Runs: CODE_RUN_BENCH_RUNS (default 40).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use agentq_shared::config::{CodeRunSettings, ToolSettings};
use agentq_shared::tools::{Tool, ToolContext};
use agentq_worker::tools::code_run::{Backend, CodeRun, DockerBackend, Language, ProcessBackend};
use serde_json::json;

fn settings(pool_size: usize) -> ToolSettings {
    ToolSettings {
        code_run: CodeRunSettings {
            python_image: std::env::var("AGENTQ_SANDBOX_PYTHON_IMAGE")
                .unwrap_or_else(|_| "agentq-sandbox-python:3.11".into()),
            node_image: std::env::var("AGENTQ_SANDBOX_NODE_IMAGE")
                .unwrap_or_else(|_| "agentq-sandbox-node:20".into()),
            pool_size,
            ..CodeRunSettings::default()
        },
        ..ToolSettings::default()
    }
}

async fn measure(label: &str, tool: &CodeRun, runs: usize, before_each: impl AsyncFn()) {
    let ctx = ToolContext {
        session_id: uuid::Uuid::nil(),
        step: 0,
    };
    let args = json!({"language": "python", "code": "print(1)"});
    // Warm-up: first runs pay for page cache and the engine's first container.
    for _ in 0..3 {
        before_each().await;
        tool.call(args.clone(), &ctx).await.unwrap();
    }
    let mut took = Vec::with_capacity(runs);
    for _ in 0..runs {
        before_each().await;
        let started = Instant::now();
        let result = tool.call(args.clone(), &ctx).await.unwrap();
        took.push(started.elapsed());
        assert_eq!(result["stdout"], json!("1\n"), "{result}");
    }
    took.sort();
    let pct = |p: usize| took[(took.len() * p / 100).min(took.len() - 1)].as_secs_f64() * 1e3;
    println!(
        "code_run print(1) {label:<34} p50 {:>6.1} ms   p95 {:>6.1} ms   ({runs} runs)",
        pct(50),
        pct(95)
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let runs: usize = std::env::var("CODE_RUN_BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(40);
    let process = settings(0);
    let backend = Backend::Process(Arc::new(ProcessBackend::new(&process.code_run)));
    let tool = CodeRun::with_backend(&process, backend);
    measure("process backend", &tool, runs, async || {}).await;

    for pool_size in [0, 2] {
        let settings = settings(pool_size);
        let docker = match DockerBackend::new(&settings.code_run) {
            Ok(docker) => Arc::new(docker),
            Err(e) => {
                println!("code_run docker: skipped ({e}; deploy/ensure-services.sh --docker)");
                return;
            }
        };
        let tool = CodeRun::with_backend(&settings, Backend::Docker(docker.clone()));
        let label = if pool_size == 0 {
            "docker, fresh container per run"
        } else {
            "docker, pre-created containers"
        };
        // Between runs the engine comes to rest, as it does during the LLM call between two
        // steps of a session: the pool is full again and the last container's background
        // removal is done. Both Docker figures are measured this way.
        let refilled = async || {
            for _ in 0..200 {
                if pool_size == 0 || docker.pool_ready(Language::Python) >= pool_size {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        };
        measure(label, &tool, runs, refilled).await;
    }
}
