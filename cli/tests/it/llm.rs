//! The LLM side against the fake Messages API: retries, both ReAct modes, the awkward cases,
//! exact cost, budgets and prompt caching.

use std::str::FromStr;
use std::time::Duration;

use agentq_cli::stand_in::{Turn, Usage};
use agentq_shared::schemas::{SessionStatus, ToolCall};
use pretty_assertions::assert_eq;
use rust_decimal::Decimal;
use serde_json::json;

use crate::harness::{Backend, TestEnv};

const RETRIES: [(&str, &str); 2] = [
    ("AGENTQ_LLM_ATTEMPTS", "5"),
    ("AGENTQ_LLM_RETRY_MIN_DELAY_MS", "50"),
];

async fn overloads_and_rate_limits_are_retried_and_billed(backend: Backend) {
    let (env, key) = TestEnv::running_on(backend, &RETRIES).await;
    env.llm.script_calls(
        "marker-retry",
        vec![
            Turn::error(529, "overloaded_error", "Overloaded"),
            Turn::error(429, "rate_limit_error", "slow down").retry_after(1),
            Turn::answer("made it"),
        ],
    );
    // Every retry sends the same conversation: the fake answers the calls in order.
    let id = env.run(&key, "marker-retry: hi", json!({})).await;
    let session = env.wait_finished(&key, id).await;
    let calls = env.llm.calls_for("marker-retry");
    assert_eq!(
        calls.iter().map(|c| c.status).collect::<Vec<_>>(),
        vec![529, 429, 200],
        "{session:#?}"
    );
    assert_eq!(session.status, SessionStatus::Completed);
    assert_eq!(session.final_answer.as_deref(), Some("made it"));
    assert!(
        calls[2].received_at - calls[1].received_at >= Duration::from_millis(950),
        "retry-after honoured"
    );
    assert_eq!(
        session.totals.llm_calls, 3,
        "every attempt is in the ledger"
    );
}

async fn a_bad_request_fails_at_once_with_the_providers_message(backend: Backend) {
    let (env, key) = TestEnv::running_on(backend, &RETRIES).await;
    env.llm.script(
        "marker-401",
        vec![Turn::error(
            401,
            "authentication_error",
            "invalid x-api-key",
        )],
    );
    let id = env.run(&key, "marker-401: hi", json!({})).await;
    let session = env.wait_status(&key, id, SessionStatus::Failed).await;
    let error = session.error.expect("error");
    assert_eq!(error.code, "llm_error");
    assert_eq!(
        error.message,
        "LLM provider answered 401: authentication_error: invalid x-api-key"
    );
    assert_eq!(env.llm.calls_for("marker-401").len(), 1, "not retried");
}

async fn json_mode_repairs_one_malformed_answer(backend: Backend) {
    let (env, key) = TestEnv::running_on(backend, &[]).await;
    let call = r#"{"thought": "use echo", "action": {"tool": "echo", "args": {"text": "hi"}}, "is_final": false}"#;
    let done =
        r#"{"thought": "done", "action": null, "is_final": true, "final_answer": "echo said hi"}"#;
    env.llm.script_calls(
        "marker-json",
        vec![
            Turn::raw_text("Sure! I'll use echo."),
            Turn::raw_text(call),
            Turn::raw_text(done),
        ],
    );
    let id = env
        .run(
            &key,
            "marker-json: go",
            json!({"react_mode": "json", "tools": ["echo"]}),
        )
        .await;
    let session = env.wait_status(&key, id, SessionStatus::Completed).await;
    assert_eq!(session.final_answer.as_deref(), Some("echo said hi"));
    let first = &session.steps[0];
    assert_eq!(
        first.action,
        Some(ToolCall {
            tool: "echo".into(),
            args: json!({"text": "hi"})
        })
    );
    assert_eq!(
        first.invalid_output.as_deref(),
        Some("Sure! I'll use echo.")
    );
    let calls = env.llm.calls_for("marker-json");
    assert_eq!(calls.len(), 3);
    assert!(
        calls[0].request.get("tools").is_none(),
        "JSON mode describes tools in the prompt"
    );
    let repair = calls[1].request["messages"][2]["content"].as_str().unwrap();
    assert!(
        repair.starts_with(
            "Your previous reply could not be used: the reply contains no JSON object."
        ),
        "{repair}"
    );
    assert_eq!(
        calls[2].request["messages"][1]["content"],
        json!(call),
        "the valid turn is replayed"
    );
    assert!(
        calls[2].request["messages"][2]["content"]
            .as_str()
            .unwrap()
            .starts_with("Observation: {\"text\":\"hi\"}")
    );
}

async fn json_mode_fails_after_two_malformed_answers(backend: Backend) {
    let (env, key) = TestEnv::running_on(backend, &[]).await;
    env.llm.script_calls(
        "marker-badjson",
        vec![
            Turn::raw_text("no JSON here"),
            Turn::raw_text("{\"thought\": 1}"),
        ],
    );
    let id = env
        .run(&key, "marker-badjson: go", json!({"react_mode": "json"}))
        .await;
    let session = env.wait_status(&key, id, SessionStatus::Failed).await;
    assert_eq!(session.error.expect("error").code, "invalid_model_output");
    assert_eq!(
        session.steps[0].invalid_output.as_deref(),
        Some("no JSON here\n---\n{\"thought\": 1}")
    );
    assert_eq!(env.llm.calls_for("marker-badjson").len(), 2);
}

async fn parallel_tool_calls_run_in_order_and_answer_in_one_turn(backend: Backend) {
    let (env, key) = TestEnv::running_on(backend, &[]).await;
    env.llm.script(
        "marker-parallel",
        vec![
            Turn::tool("echo", json!({"text": "first", "delay_ms": 200}))
                .and_tool("nonexistent", json!({}))
                .and_tool("echo", json!({"text": "third"})),
            Turn::answer("all three seen"),
        ],
    );
    let id = env
        .run(&key, "marker-parallel: go", json!({"tools": ["echo"]}))
        .await;
    let session = env.wait_status(&key, id, SessionStatus::Completed).await;
    let step = &session.steps[0];
    assert_eq!(
        step.actions
            .iter()
            .map(|a| a.tool.as_str())
            .collect::<Vec<_>>(),
        vec!["echo", "nonexistent", "echo"]
    );
    let results: Vec<_> = step
        .observations
        .iter()
        .map(|o| (o["success"].clone(), o["result"].clone()))
        .collect();
    assert_eq!(
        results,
        vec![
            (json!(true), json!({"text": "first"})),
            (json!(false), json!(null)),
            (json!(true), json!({"text": "third"}))
        ]
    );
    assert_eq!(
        step.observations[1]["error"],
        json!("unknown tool \"nonexistent\"; the tools available in this session are: [echo]")
    );
    let reply = &env.llm.calls_for("marker-parallel")[1].request["messages"][2]["content"];
    let ids: Vec<_> = reply
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["type"].clone())
        .collect();
    assert_eq!(
        ids,
        vec![json!("tool_result"); 3],
        "one user turn with every result"
    );
    assert_eq!(reply[1]["is_error"], json!(true));
}

async fn cost_is_exact_to_the_pricing_table(backend: Backend) {
    let (env, key) = TestEnv::running_on(backend, &[]).await;
    let usage = Usage {
        input_tokens: 10_000,
        output_tokens: 2_000,
        cache_creation_input_tokens: 4_000,
        cache_read_input_tokens: 30_000,
    };
    env.llm.script(
        "marker-cost",
        vec![
            Turn::tool("echo", json!({"text": "x"})).usage(usage),
            Turn::answer("done").usage(usage),
        ],
    );
    let id = env
        .run(
            &key,
            "marker-cost: go",
            json!({"model": "claude-sonnet-4-5"}),
        )
        .await;
    let session = env.wait_status(&key, id, SessionStatus::Completed).await;
    // Per call: 10000*3 + 2000*15 + 4000*3.75 + 30000*0.30 = 84000 USD per million = $0.084.
    assert_eq!(
        session.steps[0].cost_usd,
        Some(Decimal::from_str("0.084").unwrap())
    );
    assert_eq!(
        session.totals.cost_usd,
        Some(Decimal::from_str("0.168").unwrap())
    );
    assert_eq!(
        (
            session.totals.cache_write_tokens,
            session.totals.cache_read_tokens
        ),
        (8_000, 60_000)
    );

    // An unknown model has no price: cost null, never 0.
    env.llm
        .script("marker-unpriced", vec![Turn::answer("free?")]);
    let id = env
        .run(
            &key,
            "marker-unpriced: go",
            json!({"model": "gpt-oss-120b"}),
        )
        .await;
    let session = env.wait_status(&key, id, SessionStatus::Completed).await;
    assert_eq!(
        (session.totals.cost_usd, session.steps[0].cost_usd),
        (None, None)
    );
}

async fn budgets_stop_a_looping_agent(backend: Backend) {
    let (env, key) = TestEnv::running_on(backend, &[]).await;
    let usage = Usage {
        input_tokens: 900,
        output_tokens: 100,
        ..Default::default()
    };
    let looping = vec![Turn::tool("echo", json!({"text": "again"})).usage(usage); 10];
    env.llm.script("marker-tokens", looping.clone());
    env.llm.script("marker-dollars", looping);
    // 1000 tokens ($0.0042) per call.
    for (marker, budget) in [
        ("marker-tokens", json!({"max_tokens": 2500})),
        ("marker-dollars", json!({"max_cost_usd": 0.01})),
    ] {
        let id = env.run(&key, &format!("{marker}: loop"), budget).await;
        let session = env.wait_status(&key, id, SessionStatus::Failed).await;
        let error = session.error.expect("error");
        assert_eq!(error.code, "budget_exceeded", "{marker}");
        assert_eq!(
            env.llm.calls_for(marker).len(),
            3,
            "{marker}: no call after the budget was spent"
        );
        assert_eq!(
            session.steps[2].observation, None,
            "{marker}: the last call's tool did not run"
        );
    }
}

async fn truncated_and_refused_answers(backend: Backend) {
    let (env, key) = TestEnv::running_on(backend, &[]).await;
    env.llm.script_calls(
        "marker-cut",
        vec![
            Turn::answer("The answer is a very lo").stop_reason("max_tokens"),
            Turn::answer("42"),
        ],
    );
    let id = env.run(&key, "marker-cut: go", json!({})).await;
    let session = env.wait_status(&key, id, SessionStatus::Completed).await;
    assert_eq!(session.final_answer.as_deref(), Some("42"));
    let repair = env.llm.calls_for("marker-cut")[1].request["messages"][2]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(repair.contains("cut off at the output limit"), "{repair}");

    env.llm.script(
        "marker-refuse",
        vec![Turn::answer("I can't help with that.").stop_reason("refusal")],
    );
    let id = env.run(&key, "marker-refuse: go", json!({})).await;
    let session = env.wait_status(&key, id, SessionStatus::Failed).await;
    let error = session.error.expect("error");
    assert_eq!(
        (error.code.as_str(), error.message.as_str()),
        ("refusal", "the model refused: I can't help with that.")
    );
    assert_eq!(
        env.llm.calls_for("marker-refuse").len(),
        1,
        "a refusal is not retried"
    );
}

async fn the_prompt_prefix_is_cached(backend: Backend) {
    let (env, key) = TestEnv::running_on(backend, &[]).await;
    env.llm.script("marker-cache", vec![Turn::answer("ok")]);
    let id = env
        .run(
            &key,
            "marker-cache: go",
            json!({"tools": ["echo", "web_fetch"]}),
        )
        .await;
    env.wait_status(&key, id, SessionStatus::Completed).await;
    let request = &env.llm.calls_for("marker-cache")[0].request;
    assert_eq!(
        request["system"][0]["cache_control"],
        json!({"type": "ephemeral"})
    );
    let tools = request["tools"].as_array().unwrap();
    assert_eq!(
        tools.last().unwrap()["cache_control"],
        json!({"type": "ephemeral"})
    );
    assert!(tools[0].get("cache_control").is_none());
}

/// A minimal OpenAI-compatible server: calls echo first, then answers with the tool's output.
async fn chat_completions_server() -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
) {
    let seen: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>> = Default::default();
    let handler = |axum::extract::State(seen): axum::extract::State<
        std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
    >,
                   axum::Json(body): axum::Json<serde_json::Value>| async move {
        seen.lock().unwrap().push(body.clone());
        let messages = body["messages"].as_array().cloned().unwrap_or_default();
        let tool_output = messages
            .iter()
            .find(|m| m["role"] == "tool")
            .map(|m| m["content"].as_str().unwrap_or_default().to_owned());
        let message = match tool_output {
            None => json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "echo", "arguments": "{\"text\":\"from llama\"}"}}]}),
            Some(output) => {
                json!({"role": "assistant", "content": format!("the tool said {output}")})
            }
        };
        let finish = if message.get("tool_calls").is_some() {
            "tool_calls"
        } else {
            "stop"
        };
        axum::Json(
            json!({"id": "x", "object": "chat.completion", "model": body["model"],
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 50, "completion_tokens": 5, "total_tokens": 55}}),
        )
    };
    let app = axum::Router::new()
        .route("/v1/chat/completions", axum::routing::post(handler))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{address}/v1"), seen)
}

#[tokio::test]
async fn an_openai_compatible_server_can_drive_the_agent() {
    let (url, seen) = chat_completions_server().await;
    let (env, key) = TestEnv::running(&[
        ("AGENTQ_LLM_PROVIDER", "openai"),
        ("OPENAI_BASE_URL", url.as_str()),
    ])
    .await;
    let id = env
        .run(
            &key,
            "local model: echo something",
            json!({"model": "llama3.1", "tools": ["echo"]}),
        )
        .await;
    let session = env.wait_status(&key, id, SessionStatus::Completed).await;
    assert_eq!(
        session.steps[0].action,
        Some(ToolCall {
            tool: "echo".into(),
            args: json!({"text": "from llama"})
        })
    );
    assert_eq!(
        session.final_answer.as_deref(),
        Some("the tool said {\"text\":\"from llama\"}")
    );
    assert_eq!(
        (
            session.totals.llm_calls,
            session.totals.input_tokens,
            session.totals.cost_usd
        ),
        (2, 100, None)
    );
    let requests = seen.lock().unwrap().clone();
    assert_eq!(
        requests[1]["messages"][2]["tool_calls"][0]["id"],
        json!("call_1")
    );
    assert_eq!(
        requests[1]["messages"][3],
        json!({"role": "tool", "tool_call_id": "call_1", "content": "{\"text\":\"from llama\"}"})
    );
}

on_both_backends!(
    overloads_and_rate_limits_are_retried_and_billed,
    a_bad_request_fails_at_once_with_the_providers_message,
    json_mode_repairs_one_malformed_answer,
    json_mode_fails_after_two_malformed_answers,
    parallel_tool_calls_run_in_order_and_answer_in_one_turn,
    cost_is_exact_to_the_pricing_table,
    budgets_stop_a_looping_agent,
    truncated_and_refused_answers,
    the_prompt_prefix_is_cached,
);
