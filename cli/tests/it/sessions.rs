//! Sessions end to end through the API, the queue, a worker, the durable store and the fake LLM,
//! on both back ends (Postgres with Redis, and the embedded SQLite store).

use std::time::Duration;

use agentq_cli::stand_in::{Turn, Usage};
use agentq_shared::pricing::PricingTable;
use agentq_shared::schemas::{SessionStatus, ToolCall, Totals};
use pretty_assertions::assert_eq;
use serde_json::json;

use crate::harness::{Backend, TestEnv};

async fn a_session_with_a_tool_call_completes_with_exact_totals(backend: Backend) {
    let (env, key) = TestEnv::running_on(backend, &[]).await;
    env.llm.script(
        "marker-tool",
        vec![
            Turn::tool("echo", json!({"text": "hello"}))
                .with_text("I will echo it.")
                .usage(Usage {
                    input_tokens: 1200,
                    output_tokens: 80,
                    cache_creation_input_tokens: 100,
                    cache_read_input_tokens: 50,
                }),
            Turn::answer("The echo said hello."),
        ],
    );
    let id = env
        .run(
            &key,
            "marker-tool: say hello via echo",
            json!({"tools": ["echo"]}),
        )
        .await;
    let session = env.wait_status(&key, id, SessionStatus::Completed).await;

    assert_eq!(
        session.final_answer.as_deref(),
        Some("The echo said hello.")
    );
    assert_eq!(session.error, None);
    assert_eq!(session.model, "claude-sonnet-4-5");
    let indexes: Vec<u32> = session.steps.iter().map(|s| s.index).collect();
    assert_eq!(indexes, vec![0, 1]);

    let first = &session.steps[0];
    assert_eq!(first.thought.as_deref(), Some("I will echo it."));
    assert_eq!(
        first.action,
        Some(ToolCall {
            tool: "echo".into(),
            args: json!({"text": "hello"})
        })
    );
    let observation = first.observation.clone().expect("observation stored");
    assert_eq!(
        (
            observation["success"].clone(),
            observation["result"].clone(),
            observation["tool_name"].clone()
        ),
        (json!(true), json!({"text": "hello"}), json!("echo"))
    );
    assert!(!first.is_final && first.finished_at.is_some());
    let last = &session.steps[1];
    assert!(last.is_final);
    assert_eq!(
        (last.action.clone(), last.final_answer.as_deref()),
        (None, Some("The echo said hello."))
    );

    // The fake accepted both calls (it refuses malformed ones) and the totals are what it reported.
    let calls = env.llm.calls_for("marker-tool");
    assert_eq!(
        calls.iter().map(|c| c.status).collect::<Vec<_>>(),
        vec![200, 200]
    );
    let second_request = &calls[1].request;
    assert_eq!(
        second_request["messages"][2]["content"][0]["type"],
        json!("tool_result")
    );
    let reported = calls
        .iter()
        .filter_map(|c| c.usage)
        .fold(Usage::default(), |a, u| Usage {
            input_tokens: a.input_tokens + u.input_tokens,
            output_tokens: a.output_tokens + u.output_tokens,
            cache_creation_input_tokens: a.cache_creation_input_tokens
                + u.cache_creation_input_tokens,
            cache_read_input_tokens: a.cache_read_input_tokens + u.cache_read_input_tokens,
        });
    let usage = agentq_shared::schemas::Usage {
        input_tokens: reported.input_tokens,
        output_tokens: reported.output_tokens,
        cache_read_tokens: reported.cache_read_input_tokens,
        cache_write_tokens: reported.cache_creation_input_tokens,
        cache_write_1h_tokens: 0,
    };
    assert_eq!(
        session.totals,
        Totals {
            steps: 2,
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            cache_read_tokens: usage.cache_read_tokens,
            cache_write_tokens: usage.cache_write_tokens,
            cost_usd: PricingTable::builtin().cost("claude-sonnet-4-5", usage),
            llm_calls: 2,
        }
    );
    assert_eq!(session.steps[0].usage.input_tokens, 1200);

    // The durable store holds every step and every call once.
    let (steps, ledger) = (env.rows("steps", id).await, env.rows("llm_calls", id).await);
    assert_eq!((steps, ledger), (2, 2));
}

async fn cancel_between_steps_stops_the_session_before_the_next_llm_call(backend: Backend) {
    let (env, key) = TestEnv::running_on(backend, &[]).await;
    env.llm.script(
        "marker-cancel",
        vec![
            Turn::tool("echo", json!({"text": "slow", "delay_ms": 1500})),
            Turn::answer("should never be asked for"),
        ],
    );
    let id = env.run(&key, "marker-cancel: go slowly", json!({})).await;
    env.wait_until(&key, id, "in its first tool call", |s| s.steps.len() == 1)
        .await;
    let (status, body) = env
        .request(
            reqwest::Method::POST,
            &format!("/v1/agents/{id}/cancel"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(
        (status, body["cancel_requested"].clone()),
        (202, json!(true)),
        "{body}"
    );

    let session = env.wait_status(&key, id, SessionStatus::Cancelled).await;
    assert_eq!(session.final_answer, None);
    // Give a runaway worker time to make the call it must not make.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(env.llm.calls_for("marker-cancel").len(), 1);
    assert_eq!(env.session(&key, id).await.status, SessionStatus::Cancelled);

    // Cancelling again is fine; a session that completed can't be cancelled.
    let (status, body) = env.cancel(&key, id).await;
    assert_eq!((status, body["status"].clone()), (200, json!("cancelled")));
    env.llm
        .script("marker-done", vec![Turn::answer("finished")]);
    let done = env.run(&key, "marker-done: quick", json!({})).await;
    env.wait_status(&key, done, SessionStatus::Completed).await;
    let (status, body) = env.cancel(&key, done).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (409, json!("session_finished"))
    );
}

async fn a_worker_started_after_the_session_still_runs_it(backend: Backend) {
    let mut env = TestEnv::on(backend).await;
    env.start_api().await;
    let key = env.key("acme").await;
    env.llm
        .script("marker-late", vec![Turn::answer("done late")]);
    let id = env.run(&key, "marker-late: anyone there?", json!({})).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(env.session(&key, id).await.status, SessionStatus::Pending);
    assert!(env.llm.calls_for("marker-late").is_empty());

    env.start_worker();
    let session = env.wait_status(&key, id, SessionStatus::Completed).await;
    assert_eq!(session.final_answer.as_deref(), Some("done late"));
}

async fn max_steps_ends_a_looping_agent(backend: Backend) {
    let (env, key) = TestEnv::running_on(backend, &[]).await;
    let looping = vec![Turn::tool("echo", json!({"text": "again"})); 5];
    env.llm.script("marker-loop", looping);
    let id = env
        .run(&key, "marker-loop: loop", json!({"max_steps": 2}))
        .await;
    let session = env.wait_status(&key, id, SessionStatus::Failed).await;
    let error = session.error.expect("error");
    assert_eq!(error.code, "max_steps_exceeded");
    assert_eq!(session.steps.len(), 2);
    assert_eq!(env.llm.calls_for("marker-loop").len(), 2);
}

async fn an_llm_error_fails_the_session_with_the_providers_message(backend: Backend) {
    let (env, key) = TestEnv::running_on(backend, &[]).await;
    env.llm.script(
        "marker-400",
        vec![Turn::error(
            400,
            "invalid_request_error",
            "prompt is too long",
        )],
    );
    let id = env.run(&key, "marker-400: hi", json!({})).await;
    let session = env.wait_status(&key, id, SessionStatus::Failed).await;
    let error = session.error.expect("error");
    assert_eq!(error.code, "llm_error");
    assert!(
        error.message.contains("prompt is too long"),
        "{}",
        error.message
    );
    assert_eq!(
        session.totals.llm_calls, 1,
        "the failed call is in the ledger"
    );
}

async fn an_invalid_tool_call_becomes_an_error_observation(backend: Backend) {
    let (env, key) = TestEnv::running_on(backend, &[]).await;
    env.llm.script(
        "marker-badargs",
        vec![
            Turn::tool("echo", json!({"txt": 1})),
            Turn::answer("I see the error"),
        ],
    );
    let id = env.run(&key, "marker-badargs: try", json!({})).await;
    let session = env.wait_status(&key, id, SessionStatus::Completed).await;
    let observation = session.steps[0].observation.clone().expect("observation");
    assert_eq!(observation["success"], json!(false));
    let error = observation["error"].as_str().unwrap();
    assert!(error.starts_with("invalid arguments for echo"), "{error}");
    assert!(error.contains("\"text\" is a required property"), "{error}");
    let reply = &env.llm.calls_for("marker-badargs")[1].request["messages"][2]["content"][0];
    assert_eq!(reply["is_error"], json!(true));
}

on_both_backends!(
    a_session_with_a_tool_call_completes_with_exact_totals,
    cancel_between_steps_stops_the_session_before_the_next_llm_call,
    a_worker_started_after_the_session_still_runs_it,
    max_steps_ends_a_looping_agent,
    an_llm_error_fails_the_session_with_the_providers_message,
    an_invalid_tool_call_becomes_an_error_observation,
);

#[tokio::test]
async fn polls_read_redis_and_fall_back_to_postgres() {
    let (env, key) = TestEnv::running(&[]).await;
    env.llm
        .script("marker-snap", vec![Turn::answer("snapshotted")]);
    let id = env.run(&key, "marker-snap: hi", json!({})).await;
    let session = env.wait_status(&key, id, SessionStatus::Completed).await;

    let mut redis = env.redis().await;
    let snapshot_key = format!("{}:session:{id}", env.redis_prefix);
    let ttl: i64 = redis::cmd("TTL")
        .arg(&snapshot_key)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!((3000..=3600).contains(&ttl), "snapshot TTL {ttl}");
    let cached: String = redis::cmd("GET")
        .arg(&snapshot_key)
        .query_async(&mut redis)
        .await
        .unwrap();
    let cached: agentq_shared::schemas::AgentSession = serde_json::from_str(&cached).unwrap();
    assert_eq!(cached, session);

    // Redis is read first: a marked snapshot is what the API answers.
    let mut marked = session.clone();
    marked.final_answer = Some("from redis".into());
    let _: () = redis::cmd("SET")
        .arg(&snapshot_key)
        .arg(serde_json::to_string(&marked).unwrap())
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(
        env.session(&key, id).await.final_answer.as_deref(),
        Some("from redis")
    );

    // Without the snapshot, Postgres answers and the snapshot comes back.
    let _: () = redis::cmd("DEL")
        .arg(&snapshot_key)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(env.session(&key, id).await, session);
    let exists: bool = redis::cmd("EXISTS")
        .arg(&snapshot_key)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(exists);
}
