//! The round trips each hot path may spend, counted by the store's own instrumentation (a
//! count of statements and commands, not a timing): a step, a create and a poll. The test fails
//! when a change goes over a budget, and prints the counts either way.

use agentq_cli::stand_in::Turn;
use agentq_shared::queue::StepJob;
use agentq_shared::schemas::SessionStatus;
use agentq_shared::store::{Count, Counters};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::TestEnv;

/// Runs `work` and returns what it cost in round trips, printing the counts per operation.
async fn counted<T>(what: &str, counters: &Counters, work: impl Future<Output = T>) -> (T, Count) {
    let before_ops = counters.by_operation();
    let before = counters.total();
    let output = work.await;
    let spent = counters.total() - before;
    let ops: Vec<String> = counters
        .by_operation()
        .into_iter()
        .filter_map(|(op, count)| {
            let was = before_ops.get(op).copied().unwrap_or_default();
            let delta = count - was;
            (delta != Count::default())
                .then(|| format!("{op}: {} pg, {} redis", delta.durable, delta.hot))
        })
        .collect();
    println!(
        "{what}: {} Postgres round trips, {} Redis commands ({})",
        spent.durable,
        spent.hot,
        ops.join("; ")
    );
    (output, spent)
}

#[tokio::test]
async fn steps_creates_and_polls_stay_within_their_round_trip_budgets() {
    let env = TestEnv::new().await;
    let key = env.key("acme").await;
    let (api, url) = env.api_in_process().await;
    let http = reqwest::Client::new();
    env.llm.script(
        "marker-budget",
        vec![
            Turn::tool("echo", json!({"text": "counted"})),
            Turn::answer("done"),
        ],
    );

    // POST /v1/agents/run: at most 3 Postgres round trips, authentication included.
    let body = json!({"messages": [{"role": "user", "content": "marker-budget: go"}]});
    let (created, spent) = counted("POST /v1/agents/run", api.store.counters(), async {
        let response = http
            .post(format!("{url}/v1/agents/run"))
            .bearer_auth(&key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        response.json::<Value>().await.unwrap()
    })
    .await;
    assert!(spent.durable <= 3, "create spent {spent:?}");
    let id: Uuid = created["session_id"].as_str().unwrap().parse().unwrap();

    // GET /v1/agents/{id} with a fresh snapshot: no Postgres at all.
    let (_, spent) = counted("GET /v1/agents/{id}", api.store.counters(), async {
        let response = http
            .get(format!("{url}/v1/agents/{id}"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    })
    .await;
    assert_eq!(spent.durable, 0, "poll spent {spent:?}");

    // An ordinary step (lease, LLM call, tool call, advance), then the final one: at most 6
    // Postgres round trips and 6 Redis commands each, besides the queue's own.
    let ctx = env.worker_context().await;
    for step in 0..2 {
        let job = StepJob::new(id, step, None);
        let (done, spent) = counted(
            &format!("step {step}"),
            ctx.store.counters(),
            agentq_worker::step::run_step(&ctx, job),
        )
        .await;
        done.unwrap();
        assert!(spent.durable <= 6, "step {step} spent {spent:?}");
        assert!(spent.hot <= 6, "step {step} spent {spent:?}");
    }
    let session = api.store.session(id).await.unwrap().unwrap();
    assert_eq!(
        (session.status, session.final_answer.as_deref()),
        (SessionStatus::Completed, Some("done"))
    );
    // What the poll shows came from the hot copy the worker wrote, and equals Postgres.
    let (polled, spent) = counted("GET after the session", api.store.counters(), async {
        http.get(format!("{url}/v1/agents/{id}"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .json::<agentq_shared::schemas::AgentSession>()
            .await
            .unwrap()
    })
    .await;
    assert_eq!(spent.durable, 0);
    assert_eq!(polled, session);
}

/// With no hot copy (`AGENTQ_HOT_COPY=none`) every poll and cancel check reads Postgres, and a
/// session runs the same.
#[tokio::test]
async fn sessions_run_without_a_hot_copy() {
    let (env, key) = TestEnv::running(&[("AGENTQ_HOT_COPY", "none")]).await;
    env.llm.script(
        "marker-cold",
        vec![
            Turn::tool("echo", json!({"text": "cold"})),
            Turn::answer("no redis snapshot needed"),
        ],
    );
    let id = env.run(&key, "marker-cold: go", json!({})).await;
    let session = env.wait_status(&key, id, SessionStatus::Completed).await;
    assert_eq!(session.steps.len(), 2);
    let mut redis = env.redis().await;
    let snapshot_key = format!("{}:session:{id}", env.redis_prefix);
    let exists: bool = redis::cmd("EXISTS")
        .arg(&snapshot_key)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(!exists, "no snapshot is written");
}
