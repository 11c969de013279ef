//! What a hostile model, page or tenant tried and must not get: a turn approved by showing only
//! its first call, a session wedged by a NUL character or by a step that fails every time, and
//! a cancel that leaves a session waiting for approval.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use agentq_cli::stand_in::Turn;
use agentq_shared::schemas::SessionStatus;
use pretty_assertions::assert_eq;
use reqwest::Method;
use serde_json::json;

use crate::harness::{Backend, TestEnv};

/// A page on loopback that counts how often it was fetched.
pub(crate) struct CountingPage {
    pub(crate) url: String,
    hits: Arc<AtomicUsize>,
}

impl CountingPage {
    pub(crate) async fn serve(content_type: &'static str, body: &'static str) -> Self {
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let app = axum::Router::new().route(
            "/page",
            axum::routing::get(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                async move { ([("content-type", content_type)], body) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url: format!("http://{address}/page"),
            hits,
        }
    }

    pub(crate) fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn the_approver_sees_every_call_of_the_turn_and_none_runs_before(backend: Backend) {
    let (env, key) =
        TestEnv::running_on(backend, &[("AGENTQ_WEB_FETCH_ALLOW", "127.0.0.1/32")]).await;
    let page = CountingPage::serve("text/plain", "harmless page").await;
    env.llm.script(
        "marker-two-calls",
        vec![
            Turn::tool("web_fetch", json!({"url": page.url}))
                .and_tool("echo_approved", json!({"text": "the real ask"}))
                .with_text("two at once"),
            Turn::answer("done"),
        ],
    );
    let id = env
        .run(
            &key,
            "marker-two-calls: go",
            json!({"tools": ["web_fetch", "echo_approved"]}),
        )
        .await;
    let waiting = env.wait_awaiting_approval(&key, id).await;
    let pending = waiting.pending_approval.clone().expect("pending approval");
    let calls: Vec<_> = pending
        .calls
        .iter()
        .map(|c| {
            (
                c.call,
                c.tool.as_str(),
                c.args.clone(),
                c.requires_approval,
                c.details.clone(),
                c.id.as_deref().is_some_and(|id| id.starts_with("toolu_")),
            )
        })
        .collect();
    assert_eq!(
        calls,
        vec![
            (0, "web_fetch", json!({"url": page.url}), false, None, true),
            (
                1,
                "echo_approved",
                json!({"text": "the real ask"}),
                true,
                Some(json!({"characters": 12})),
                true
            ),
        ]
    );
    // The first call needing approval is also the one named at the top.
    assert_eq!((pending.step, pending.tool.as_str()), (0, "echo_approved"));
    assert_eq!(
        page.hits(),
        0,
        "no call of the turn ran before the decision"
    );
    assert_eq!(
        waiting.steps[0].observations,
        Vec::<serde_json::Value>::new()
    );

    // The CLI shows both calls, with their arguments.
    let shown = env
        .command("agentq")
        .env("AGENTQ_API_KEY", &key)
        .args(["get", &id.to_string()])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&shown.stdout);
    for expected in [
        "step 0 awaits approval",
        "[0] web_fetch (runs once the turn is approved)",
        &page.url,
        "[1] echo_approved (needs approval)",
        "the real ask",
        "{\"characters\":12}",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }

    // One decision covers the whole turn.
    let approve = env
        .command("agentq")
        .env("AGENTQ_API_KEY", &key)
        .args([
            "approve",
            &id.to_string(),
            "--step",
            "0",
            "--reason",
            "both fine",
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(
        approve.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&approve.stderr)
    );
    let session = env.wait_status(&key, id, SessionStatus::Completed).await;
    assert_eq!(page.hits(), 1);
    let observations = &session.steps[0].observations;
    assert_eq!(observations.len(), 2, "{observations:?}");
    assert_eq!(observations[1]["result"], json!({"text": "the real ask"}));
}

async fn cancel_ends_a_session_awaiting_approval_at_once(backend: Backend) {
    let (env, key) = TestEnv::running_on(backend, &[]).await;
    env.llm.script(
        "marker-cancel-waiting",
        vec![
            Turn::tool("echo_approved", json!({"text": "never"})),
            Turn::answer("no"),
        ],
    );
    let id = env
        .run(
            &key,
            "marker-cancel-waiting: wait",
            json!({"tools": ["echo_approved"]}),
        )
        .await;
    env.wait_awaiting_approval(&key, id).await;
    let (status, body) = env.cancel(&key, id).await;
    assert_eq!(
        (status, &body["status"], &body["pending_approval"]),
        (202, &json!("cancelled"), &json!(null)),
        "{body}"
    );
    // The pending call never runs, and the session stays cancelled.
    let path = format!("/v1/agents/{id}/approve");
    let (status, body) = env
        .request(
            Method::POST,
            &path,
            Some(&key),
            Some(json!({"step": 0, "approved": true})),
        )
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (409, &json!("not_awaiting_approval"))
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let session = env.session(&key, id).await;
    assert_eq!(session.status, SessionStatus::Cancelled);
    assert_eq!(session.steps[0].observation, None);
    let (status, body) = env.cancel(&key, id).await;
    assert_eq!((status, &body["status"]), (200, &json!("cancelled")));
}

/// Postgres refuses U+0000. A NUL in a fetched page, a program's output or the model's text is
/// stored as U+FFFD and the session goes on; each tool ran once.
async fn a_nul_character_in_any_content_is_stored_safely(backend: Backend) {
    let mut env = TestEnv::on(backend).await;
    env.set("AGENTQ_WEB_FETCH_ALLOW", "127.0.0.1/32");
    env.set("AGENTQ_SANDBOX_PYTHON_IMAGE", "agentq-sandbox-python:3.11");
    env.start_api().await;
    env.start_worker();
    let key = env.key("acme").await;
    let page = CountingPage::serve("text/plain", "before\0after").await;
    env.llm.script(
        "marker-nul-page",
        vec![
            Turn::tool("web_fetch", json!({"url": page.url})),
            Turn::answer("read it"),
        ],
    );
    env.llm.script(
        "marker-nul-code",
        vec![
            Turn::tool(
                "code_run",
                json!({"language": "python", "code": "print('a\\0b')"}),
            ),
            Turn::answer("ran it"),
        ],
    );
    env.llm.script(
        "marker-nul-model",
        vec![
            Turn::tool("echo", json!({"text": "x\u{0}y"})).with_text("thinking\u{0}hard"),
            Turn::answer("zero\u{0}byte"),
        ],
    );
    let tools = json!({"tools": ["web_fetch", "code_run", "echo"]});
    let page_id = env.run(&key, "marker-nul-page: read", tools.clone()).await;
    let code_id = env.run(&key, "marker-nul-code: run", tools.clone()).await;
    let model_id = env.run(&key, "marker-nul-model: talk", tools).await;

    let session = env
        .wait_status(&key, page_id, SessionStatus::Completed)
        .await;
    let body = session.steps[0].observation.as_ref().unwrap()["result"]["body"].clone();
    assert!(
        body.as_str().unwrap().contains("before\u{FFFD}after"),
        "{body}"
    );
    assert_eq!(page.hits(), 1, "the page was fetched once");

    let session = env
        .wait_status(&key, code_id, SessionStatus::Completed)
        .await;
    let result = &session.steps[0].observation.as_ref().unwrap()["result"];
    assert_eq!(result["stdout"], json!("a\u{FFFD}b\n"), "{result}");

    let session = env
        .wait_status(&key, model_id, SessionStatus::Completed)
        .await;
    assert_eq!(
        (
            session.steps[0].thought.as_deref(),
            session.steps[0].action.as_ref().map(|a| a.args.clone()),
            session.final_answer.as_deref()
        ),
        (
            Some("thinking\u{FFFD}hard"),
            Some(json!({"text": "x\u{FFFD}y"})),
            Some("zero\u{FFFD}byte")
        )
    );
    // Each session took one LLM call per step: nothing was repeated.
    for marker in ["marker-nul-page", "marker-nul-code", "marker-nul-model"] {
        assert_eq!(env.llm.calls_for(marker).len(), 2, "{marker}");
    }

    // A request carrying one is refused with 422 naming the field, not a 500.
    let (status, body) = env
        .request(
            Method::POST,
            "/v1/agents/run",
            Some(&key),
            Some(json!({"messages": [{"role": "user", "content": "a\u{0}b"}], "model": "m\u{0}"})),
        )
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (422, &json!("invalid_request")),
        "{body}"
    );
    let fields: Vec<&str> = body["error"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, vec!["messages[0].content", "model"]);
}

/// A step whose write the durable store refuses every time (here a trigger stands for any such
/// fault) ends its session `failed` with `step_retries_exhausted` after
/// AGENTQ_STEP_MAX_ATTEMPTS deliveries, running its tool at most that many times.
async fn a_step_that_fails_on_every_delivery_ends_its_session(backend: Backend) {
    let mut env = TestEnv::on(backend).await;
    env.set("AGENTQ_WEB_FETCH_ALLOW", "127.0.0.1/32");
    env.set("AGENTQ_STEP_MAX_ATTEMPTS", "3");
    env.start_api().await;
    env.start_worker();
    let key = env.key("acme").await;
    env.refuse_step_updates_containing("POISON").await;
    let page = CountingPage::serve("text/plain", "POISON").await;
    env.llm.script(
        "marker-poison",
        vec![
            Turn::tool("web_fetch", json!({"url": page.url})),
            Turn::answer("never"),
        ],
    );
    let id = env
        .run(&key, "marker-poison: read", json!({"tools": ["web_fetch"]}))
        .await;
    let session = env.wait_status(&key, id, SessionStatus::Failed).await;
    let error = session.error.expect("error");
    assert_eq!(error.code, "step_retries_exhausted", "{}", error.message);
    assert!(error.message.contains("3 attempts"), "{}", error.message);
    let hits = page.hits();
    assert!((1..=3).contains(&hits), "the page was fetched {hits} times");
    assert_eq!(env.llm.calls_for("marker-poison").len(), 1);
}

on_both_backends!(
    the_approver_sees_every_call_of_the_turn_and_none_runs_before,
    cancel_ends_a_session_awaiting_approval_at_once,
    a_nul_character_in_any_content_is_stored_safely,
    a_step_that_fails_on_every_delivery_ends_its_session,
);
