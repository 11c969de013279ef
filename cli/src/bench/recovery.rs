//! `agentq bench recovery`: how long a session stands still after its worker dies. A worker
//! holding a session in a long tool call is SIGKILLed, and the clock runs until another worker
//! holds the session's lease (the session is moving again). Default timings: heartbeat 2 s x 3
//! missed, lease 6 s.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::load::round;
use super::stack::Stack;
use super::{Options, Table};
use crate::stand_in::Turn;

pub async fn run(options: Options) -> anyhow::Result<Vec<Table>> {
    let rounds = if options.quick { 2 } else { 8 };
    let mut stack = Stack::new("recovery").await?;
    stack.start_api().await?;
    stack.start_workers(2).await?;
    let mut samples = Vec::new();
    for round in 0..rounds {
        let marker = format!("recovery-{round}");
        let slow = Turn::tool("echo", json!({"text": "slow", "delay_ms": 60_000}));
        stack.llm.script(&marker, vec![slow, Turn::answer("done")]);
        let body = json!({"messages": [{"role": "user", "content": marker}], "tools": ["echo"]});
        let created: Value = stack
            .http
            .post(format!("{}/v1/agents/run", stack.api_url))
            .bearer_auth(&stack.key)
            .json(&body)
            .send()
            .await?
            .json()
            .await?;
        let id = created["session_id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no session id in {created}"))?;
        let waited = Instant::now();
        let owner = loop {
            if let Some(owner) = stack.lease_holder(id).await? {
                break owner;
            }
            anyhow::ensure!(
                waited.elapsed() < Duration::from_secs(60),
                "no worker took the session"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let victim = stack
            .worker_pids()
            .into_iter()
            .find(|pid| owner.starts_with(&format!("agentq-worker-{pid}-")))
            .ok_or_else(|| anyhow::anyhow!("the lease owner {owner} is none of our workers"))?;
        stack.replace_worker(victim).await?;
        let killed = Instant::now();
        loop {
            match stack.lease_holder(id).await? {
                Some(new_owner) if new_owner != owner => break,
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
            anyhow::ensure!(
                killed.elapsed() < Duration::from_secs(120),
                "the session never moved again"
            );
        }
        samples.push(killed.elapsed());
        let _ = stack
            .http
            .post(format!("{}/v1/agents/{id}/cancel", stack.api_url))
            .bearer_auth(&stack.key)
            .send()
            .await;
    }
    samples.sort();
    let at = |p: f64| samples[((samples.len() as f64 - 1.0) * p).round() as usize].as_secs_f64();
    let mut table = Table::new(
        format!("{rounds} SIGKILLs of the worker running a step (default timings)"),
        &["measure", "p50 s", "p95 s", "max s"],
    );
    table.rows.push(vec![
        json!("worker death -> session moving again"),
        json!(round(at(0.5), 2)),
        json!(round(at(0.95), 2)),
        json!(round(at(1.0), 2)),
    ]);
    Ok(vec![table])
}
