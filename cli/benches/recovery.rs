//! How long a session stands still after its worker dies: a worker holding a session in a long
//! tool call is SIGKILLed, and the clock runs until another worker has taken the session's lease
//! (the session is moving again). Default timings: heartbeat 2 s x 3 missed, lease 6 s.
//! Prints figures; asserts nothing (target: p95 under 10 s).
//!
//! Run with `deploy/bench.sh` (builds the release binaries first).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/it/harness.rs"]
#[allow(dead_code)]
mod harness;

use std::time::{Duration, Instant};

use agentq_cli::stand_in::Turn;
use serde_json::json;

const ROUNDS: usize = 8;

async fn lease_owner(env: &harness::TestEnv, id: uuid::Uuid) -> Option<String> {
    sqlx::query_scalar("SELECT lease_owner FROM sessions WHERE id = $1")
        .bind(id)
        .fetch_one(&env.pg)
        .await
        .unwrap()
}

#[tokio::main]
async fn main() {
    let mut env = harness::TestEnv::new().await;
    env.start_api().await;
    let mut workers: Vec<usize> = (0..2).map(|_| env.start_worker()).collect();
    let key = env.key("bench").await;
    let mut samples = Vec::new();
    for round in 0..ROUNDS {
        let marker = format!("recovery-{round}");
        let slow = Turn::tool("echo", json!({"text": "slow", "delay_ms": 60_000}));
        env.llm.script(&marker, vec![slow, Turn::answer("done")]);
        let id = env.run(&key, &marker, json!({"tools": ["echo"]})).await;
        let owner = loop {
            if let Some(owner) = lease_owner(&env, id).await {
                break owner;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let victim = *workers
            .iter()
            .find(|&&w| {
                env.pid(w)
                    .is_some_and(|pid| owner.starts_with(&format!("agentq-worker-{pid}-")))
            })
            .expect("the lease owner is one of our workers");
        env.kill(victim).await;
        let killed = Instant::now();
        workers.retain(|&w| w != victim);
        workers.push(env.start_worker());
        loop {
            match lease_owner(&env, id).await {
                Some(new_owner) if new_owner != owner => break,
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
            assert!(
                killed.elapsed() < Duration::from_secs(120),
                "session never moved again"
            );
        }
        samples.push(killed.elapsed());
        let _ = env.cancel(&key, id).await;
    }
    samples.sort();
    let at = |p: f64| samples[((samples.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "agentq recovery benchmark ({ROUNDS} SIGKILLs of the worker running a step, default timings)"
    );
    println!(
        "worker death -> session moving again  p50={:.1?} p95={:.1?} max={:.1?}",
        at(0.5),
        at(0.95),
        samples[samples.len() - 1]
    );
}
