//! How fast a queued step is picked up: the time from `POST /v1/agents/run` answering to the
//! worker's LLM call reaching the fake Messages API, and to the session completing, over
//! sequential one-step sessions. Prints figures; asserts nothing (target: pick-up p95 < 500 ms).
//!
//! Run with `deploy/bench.sh` (builds the release binaries first).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/it/harness.rs"]
#[allow(dead_code)]
mod harness;

use std::time::{Duration, Instant};

use agentq_cli::stand_in::Turn;
use agentq_shared::schemas::SessionStatus;
use serde_json::json;

const SESSIONS: usize = 40;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{name:<28} n={:<4} p50={:>7.1?} p95={:>7.1?} max={:>7.1?}",
        samples.len(),
        percentile(&samples, 0.50),
        percentile(&samples, 0.95),
        samples[samples.len() - 1]
    );
}

#[tokio::main]
async fn main() {
    let mut env = harness::TestEnv::new().await;
    env.start_api().await;
    env.start_worker();
    let key = env.key("bench").await;

    // Warm up: the worker has registered and polled once.
    env.llm.script("bench-warmup", vec![Turn::answer("ok")]);
    let id = env.run(&key, "bench-warmup", json!({})).await;
    env.wait_status(&key, id, SessionStatus::Completed).await;

    let mut pickup = Vec::new();
    let mut complete = Vec::new();
    for i in 0..SESSIONS {
        let marker = format!("bench-{i}");
        env.llm.script(&marker, vec![Turn::answer("done")]);
        let created = Instant::now();
        let id = env.run(&key, &marker, json!({})).await;
        let session = env.wait_status(&key, id, SessionStatus::Completed).await;
        complete.push(created.elapsed());
        let first_call = env.llm.calls_for(&marker)[0].received_at;
        pickup.push(first_call.duration_since(created));
        assert_eq!(session.steps.len(), 1);
    }
    println!(
        "agentq pick-up benchmark ({SESSIONS} sequential one-step sessions, 1 worker, poll 100 ms)"
    );
    report("enqueue -> first LLM call", pickup);
    report("enqueue -> session completed", complete);
}
