//! `agentq bench steps`: durable steps per second, and the latency each step adds, with 1, 2 and
//! 4 worker processes and 20 and 200 sessions in flight. Each session is ten steps (nine `echo`
//! calls, then the answer) from the stand-in model with no delay, so the figures are agentq's
//! own: lease, LLM call over HTTP, decision, tool, result, advance, queue hop. A closed loop
//! keeps the sessions in flight: one finishes, another starts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agentq_shared::schemas::AgentSession;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use uuid::Uuid;

use super::cpu;
use super::load::round;
use super::stack::Stack;
use super::{Options, Table};
use crate::stand_in::Turn;

const MARKER: &str = "bench-steps";
const STEPS: usize = 10;

fn script(stack: &Stack) {
    let mut turns: Vec<Turn> = (0..STEPS - 1)
        .map(|i| Turn::tool("echo", json!({"text": format!("step {i}")})))
        .collect();
    turns.push(Turn::answer("done"));
    stack.llm.script(MARKER, turns);
}

async fn create(stack: &Stack) -> Option<Uuid> {
    let body = json!({"messages": [{"role": "user", "content": format!("{MARKER}: work")}],
                      "tools": ["echo"], "max_steps": STEPS + 1});
    let response = stack
        .http
        .post(format!("{}/v1/agents/run", stack.api_url))
        .bearer_auth(&stack.key)
        .json(&body)
        .send()
        .await
        .ok()?;
    let created: Value = response.json().await.ok()?;
    created["session_id"].as_str()?.parse().ok()
}

/// One configuration, measured for `seconds`.
struct Run {
    steps_per_second: f64,
    per_step: Histogram<u64>,
    transactions_per_step: f64,
    redis_per_step: f64,
    /// Milliseconds of the whole machine's CPU per step finished, and the share the hypervisor
    /// took (`None` without `/proc/stat`).
    cpu_per_step: Option<(f64, f64)>,
    failed: u64,
}

async fn measure(stack: &Stack, in_flight: usize, seconds: Duration) -> anyhow::Result<Run> {
    let ids: Arc<std::sync::Mutex<Vec<Uuid>>> = Arc::default();
    let fill = |n: usize| {
        let ids = ids.clone();
        async move {
            let made = futures::future::join_all((0..n).map(|_| create(stack))).await;
            let made: Vec<Uuid> = made.into_iter().flatten().collect();
            if let Ok(mut ids) = ids.lock() {
                ids.extend(made);
            }
        }
    };
    fill(in_flight).await;
    // Let the pipeline fill before measuring.
    let warm_until = Instant::now() + seconds / 4;
    let mut window: Option<(Instant, u64, u64, u64, Option<cpu::Sample>)> = None;
    // The benchmark's own queries in the window, which are not agentq's transactions.
    let mut own_queries = 0u64;
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Counted from an index of unfinished sessions only: the full summary reads every
        // session and step, and polling it would take a good part of a core from agentq.
        let unfinished = stack.unfinished().await? as usize;
        own_queries += 1;
        if unfinished < in_flight {
            fill(in_flight - unfinished).await;
        }
        let now = Instant::now();
        match window {
            None if now >= warm_until => {
                let steps0 = stack.summary().await?.steps_finished;
                window = Some((
                    now,
                    steps0,
                    stack.transactions().await?,
                    stack.redis_commands().await?,
                    cpu::Sample::now(),
                ));
                own_queries = 0;
            }
            Some((start, steps0, tx0, redis0, cpu0)) if now >= start + seconds => {
                let cpu1 = cpu::Sample::now();
                let summary = stack.summary().await?;
                let steps = (summary.steps_finished - steps0).max(1);
                let elapsed = now.duration_since(start).as_secs_f64();
                let tx = (stack.transactions().await?).saturating_sub(tx0 + own_queries + 1);
                let redis = (stack.redis_commands().await?).saturating_sub(redis0);
                let failed = summary.sessions(agentq_shared::schemas::SessionStatus::Failed);
                let cpu_per_step = cpu0
                    .zip(cpu1)
                    .map(|(a, b)| (a.ms_per(&b, steps), a.steal_share(&b)));
                let sample: Vec<Uuid> = ids
                    .lock()
                    .map(|ids| ids.iter().take(100).copied().collect())
                    .unwrap_or_default();
                return Ok(Run {
                    steps_per_second: steps as f64 / elapsed,
                    per_step: per_step_latency(stack, &sample).await,
                    transactions_per_step: tx as f64 / steps as f64,
                    redis_per_step: redis as f64 / steps as f64,
                    cpu_per_step,
                    failed,
                });
            }
            _ => {}
        }
    }
}

/// The time between one step's end and the next one's, in the sessions of `sample` that have
/// finished: what agentq adds to a step (queue hop, lease, writes), the model and tool taking
/// next to nothing here.
async fn per_step_latency(stack: &Stack, sample: &[Uuid]) -> Histogram<u64> {
    let mut latency = Histogram::new_with_bounds(1, 60_000_000, 3)
        .unwrap_or_else(|_| unreachable!("valid bounds"));
    for id in sample {
        let Ok(response) = stack
            .http
            .get(format!("{}/v1/agents/{id}", stack.api_url))
            .bearer_auth(&stack.key)
            .send()
            .await
        else {
            continue;
        };
        let Ok(session) = response.json::<AgentSession>().await else {
            continue;
        };
        if !session.status.is_terminal() {
            continue;
        }
        let ends: Vec<_> = session.steps.iter().filter_map(|s| s.finished_at).collect();
        for pair in ends.windows(2) {
            let micros = (pair[1] - pair[0]).num_microseconds().unwrap_or(0).max(1);
            let _ = latency.record(micros as u64);
        }
    }
    latency
}

pub async fn run(options: Options) -> anyhow::Result<Vec<Table>> {
    let dev = options.backend == crate::args::BenchBackend::Dev;
    let mut stack = if dev {
        Stack::new_dev("steps").await?
    } else {
        Stack::new("steps").await?
    };
    stack.start_api().await?;
    script(&stack);
    let (mut workers, mut in_flight) = if options.quick {
        (vec![2], vec![1, 20])
    } else {
        (vec![1, 2, 4], vec![20, 200])
    };
    if !options.workers.is_empty() {
        workers = options.workers.clone();
    }
    if !options.sessions.is_empty() {
        in_flight = options.sessions.clone();
    }
    let mut table = Table::new(
        format!(
            "durable steps{}, {STEPS}-step sessions, echo tool, stand-in model without delay, {:.0} s each",
            if dev {
                " (agentq dev: one process on SQLite)"
            } else {
                ""
            },
            options.seconds.as_secs_f64()
        ),
        &[
            "workers",
            "sessions",
            "steps/s",
            "step p50 ms",
            "step p99 ms",
            "pg tx/step",
            "redis cmd/step",
            "cpu ms/step",
            "steal %",
            "failed",
        ],
    );
    for &w in &workers {
        stack.stop_workers().await;
        stack.start_workers(w).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        for &c in &in_flight {
            let run = measure(&stack, c, options.seconds).await?;
            let ms = |q: f64| round(run.per_step.value_at_quantile(q) as f64 / 1000.0, 2);
            table.rows.push(vec![
                json!(w),
                json!(c),
                json!(round(run.steps_per_second, 0)),
                json!(ms(0.50)),
                json!(ms(0.99)),
                // Neither Postgres nor Redis in dev mode: nothing to count.
                if dev {
                    Value::Null
                } else {
                    json!(round(run.transactions_per_step, 2))
                },
                if dev {
                    Value::Null
                } else {
                    json!(round(run.redis_per_step, 2))
                },
                run.cpu_per_step
                    .map_or(Value::Null, |(ms, _)| json!(round(ms, 2))),
                run.cpu_per_step
                    .map_or(Value::Null, |(_, steal)| json!(round(steal * 100.0, 1))),
                json!(run.failed),
            ]);
            // Let the sessions in flight drain before the next configuration.
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                if stack.unfinished().await? == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    table.notes.push(
        "pg tx/step and redis cmd/step count everything on the server during the window \
         (session creation and the queue included), per step finished"
            .into(),
    );
    table.notes.push(
        "cpu ms/step: the whole machine's CPU time in the window (every process: agentq, \
         Postgres, Redis, this benchmark) per step finished; steal %: the time the hypervisor \
         took. On a shared machine steps/s moves with the neighbours, cpu ms/step much less: \
         compare builds by it"
            .into(),
    );
    table.notes.push(
        "step latency: time between two steps' ends in the same session, queueing for a busy \
         worker included"
            .into(),
    );
    Ok(vec![table])
}
