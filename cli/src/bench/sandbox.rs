//! `agentq bench sandbox`: `print(1)` end to end through the code_run tool (arguments in, JSON
//! result out), per backend: the process sandbox, and Docker with and without pre-created
//! containers (skipped when no engine answers).

use std::sync::Arc;
use std::time::{Duration, Instant};

use agentq_shared::config::{CodeRunSettings, ToolSettings};
use agentq_shared::tools::{Tool, ToolContext};
use agentq_worker::tools::code_run::{Backend, CodeRun, DockerBackend, Language, ProcessBackend};
use serde_json::json;

use super::load::round;
use super::{Options, Table};

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

async fn measure(
    tool: &CodeRun,
    runs: usize,
    before_each: impl AsyncFn(),
) -> anyhow::Result<(f64, f64)> {
    let ctx = ToolContext {
        session_id: uuid::Uuid::nil(),
        step: 0,
    };
    let args = json!({"language": "python", "code": "print(1)"});
    // Warm-up: the first runs pay for the page cache and the engine's first container.
    for _ in 0..3 {
        before_each().await;
        tool.call(args.clone(), &ctx).await?;
    }
    let mut took = Vec::with_capacity(runs);
    for _ in 0..runs {
        before_each().await;
        let started = Instant::now();
        let result = tool.call(args.clone(), &ctx).await?;
        took.push(started.elapsed());
        anyhow::ensure!(
            result["stdout"] == json!("1\n"),
            "unexpected result {result}"
        );
    }
    took.sort();
    let pct = |p: usize| took[(took.len() * p / 100).min(took.len() - 1)].as_secs_f64() * 1e3;
    Ok((pct(50), pct(95)))
}

pub async fn run(options: Options) -> anyhow::Result<Vec<Table>> {
    let runs = if options.quick { 10 } else { 40 };
    let mut table = Table::new(
        format!("code_run print(1), {runs} runs each"),
        &["backend", "p50 ms", "p95 ms"],
    );
    let process = settings(0);
    let backend = Backend::Process(Arc::new(ProcessBackend::new(&process.code_run)));
    let tool = CodeRun::with_backend(&process, backend);
    let (p50, p95) = measure(&tool, runs, async || {}).await?;
    table.rows.push(vec![
        json!("process (bubblewrap)"),
        json!(round(p50, 1)),
        json!(round(p95, 1)),
    ]);

    for pool_size in [0, 2] {
        let settings = settings(pool_size);
        let docker = match DockerBackend::new(&settings.code_run) {
            Ok(docker) => Arc::new(docker),
            Err(e) => {
                table.notes.push(format!(
                    "docker skipped: {e} (deploy/ensure-services.sh --docker)"
                ));
                break;
            }
        };
        let tool = CodeRun::with_backend(&settings, Backend::Docker(docker.clone()));
        // Between runs the engine comes to rest, as during the LLM call between two steps: the
        // pool is full again and the last container's background removal is done.
        let rested = async || {
            for _ in 0..200 {
                if pool_size == 0 || docker.pool_ready(Language::Python) >= pool_size {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        };
        let (p50, p95) = measure(&tool, runs, rested).await?;
        let label = if pool_size == 0 {
            "docker, fresh container per run"
        } else {
            "docker, pre-created containers"
        };
        table.rows.push(vec![
            json!(label),
            json!(round(p50, 1)),
            json!(round(p95, 1)),
        ]);
    }
    Ok(vec![table])
}
