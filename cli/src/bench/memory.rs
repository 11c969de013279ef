//! `agentq bench memory`: resident size of the API and of a worker, idle, under load (creates
//! at 50 clients; 20 sessions' steps in flight), and after 10,000 sessions have finished.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::api::create_request;
use super::load;
use super::stack::{Stack, resident_mb};
use super::{Options, Table};

fn sizes(stack: &Stack) -> (f64, f64) {
    let api = stack.api_pid().and_then(resident_mb).unwrap_or(0.0);
    let worker = stack
        .worker_pids()
        .into_iter()
        .filter_map(resident_mb)
        .fold(0.0, f64::max);
    (api, worker)
}

pub async fn run(options: Options) -> anyhow::Result<Vec<Table>> {
    let mut stack = Stack::new("memory").await?;
    stack.start_api().await?;
    stack.start_workers(1).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut table = Table::new(
        "resident size (MB): the API and one worker",
        &["when", "api MB", "worker MB"],
    );
    let (api, worker) = sizes(&stack);
    table.rows.push(vec![
        json!("idle"),
        json!(load::round(api, 1)),
        json!(load::round(worker, 1)),
    ]);

    // Under load: creates at 50 clients while the worker runs what they create; sampled.
    let peak = Arc::new(std::sync::Mutex::new((0.0f64, 0.0f64)));
    let sampling = {
        let (peak, api_pid, worker_pids) = (peak.clone(), stack.api_pid(), stack.worker_pids());
        tokio::spawn(async move {
            loop {
                let api = api_pid.and_then(resident_mb).unwrap_or(0.0);
                let worker = worker_pids
                    .iter()
                    .copied()
                    .filter_map(resident_mb)
                    .fold(0.0, f64::max);
                if let Ok(mut peak) = peak.lock() {
                    *peak = (peak.0.max(api), peak.1.max(worker));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    load::closed_loop(50, options.seconds, create_request(&stack, None)).await;
    sampling.abort();
    let (api, worker) = peak.lock().map(|p| *p).unwrap_or_default();
    table.rows.push(vec![
        json!("under load (peak)"),
        json!(load::round(api, 1)),
        json!(load::round(worker, 1)),
    ]);

    // 10,000 sessions through (fewer in a quick run), 100 in flight.
    let total: u64 = if options.quick { 500 } else { 10_000 };
    let base = stack.summary().await?;
    let target = base.sessions_by_status.iter().map(|(_, n)| n).sum::<u64>() + total;
    let started = Instant::now();
    let create = create_request(&stack, None);
    let mut created = 0;
    while created < total {
        let summary = stack.summary().await?;
        let in_flight = created + (target - total) - summary.finished();
        let room = 100u64.saturating_sub(in_flight).min(total - created);
        futures::future::join_all((0..room).map(|_| create())).await;
        created += room;
        tokio::time::sleep(Duration::from_millis(20)).await;
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(900),
            "the sessions did not finish within 15 minutes"
        );
    }
    loop {
        if stack.summary().await?.finished() >= target {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(900),
            "the sessions did not finish within 15 minutes"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (api, worker) = sizes(&stack);
    table.rows.push(vec![
        json!(format!("after {total} more sessions finished")),
        json!(load::round(api, 1)),
        json!(load::round(worker, 1)),
    ]);
    table.notes.push(format!(
        "{total} sessions in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    Ok(vec![table])
}
