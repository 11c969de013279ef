//! The durable store's contract on both back ends: Postgres, and the embedded SQLite store
//! (`DATABASE_URL=sqlite:...`, the one `agentq dev` uses). The same scenario bodies run against
//! each, through the API in this process and the worker's step protocol (`run_step`), and assert
//! the same observable results: a session run to its answer with its event log, idempotent
//! create, cancel, an approval, and a worker whose lease ran out changing nothing.

use std::time::Duration;

use agentq_cli::stand_in::Turn;
use agentq_shared::queue::StepJob;
use agentq_shared::schemas::{AgentSession, SessionStatus};
use agentq_shared::store::{Begin, Decision, StoreError};
use pretty_assertions::assert_eq;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::{Backend, TestEnv, fetch_session};
use crate::observe::read_events;

/// A running API (in this process) and a worker context on `backend`, with a key of org acme.
struct Stack {
    env: TestEnv,
    api: agentq_api::AppState,
    url: String,
    key: String,
    ctx: std::sync::Arc<agentq_worker::Context>,
    http: reqwest::Client,
}

impl Stack {
    async fn new(backend: Backend) -> Self {
        Self::with(backend, &[]).await
    }

    /// With `vars` set for the API and the worker.
    async fn with(backend: Backend, vars: &[(&str, &str)]) -> Self {
        let mut env = TestEnv::on(backend).await;
        for (var, value) in vars {
            env.set(var, value);
        }
        let (api, url) = env.api_in_process().await;
        let (_, key) = api.store.create_api_key("acme").await.unwrap();
        let ctx = env.worker_context().await;
        Self {
            env,
            api,
            url,
            key,
            ctx,
            http: reqwest::Client::new(),
        }
    }

    async fn post(&self, path: &str, body: Value, idempotency: Option<&str>) -> (u16, Value) {
        let mut request = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(&self.key)
            .json(&body);
        if let Some(k) = idempotency {
            request = request.header("Idempotency-Key", k);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn run(&self, question: &str, extra: Value) -> Uuid {
        let mut body = json!({"messages": [{"role": "user", "content": question}]});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().cloned().unwrap_or_default());
        let (status, created) = self.post("/v1/agents/run", body, None).await;
        assert_eq!(status, 202, "{created}");
        created["session_id"].as_str().unwrap().parse().unwrap()
    }

    async fn get(&self, id: Uuid) -> AgentSession {
        fetch_session(&self.http, &self.url, &self.key, &id.to_string()).await
    }

    /// Runs the session's steps the way the queue would deliver them, until it stops moving.
    async fn drive(&self, id: Uuid) -> AgentSession {
        for _ in 0..20 {
            let session = self.get(id).await;
            if session.status != SessionStatus::Pending && session.status != SessionStatus::Running
            {
                return session;
            }
            let step = session.steps.len() as u32;
            let step = match session.steps.last() {
                Some(last) if last.observation.is_none() && !last.is_final => step - 1,
                _ => step,
            };
            agentq_worker::step::run_step(&self.ctx, StepJob::new(id, step, None))
                .await
                .unwrap();
        }
        panic!("session {id} kept running");
    }

    /// The kinds of the session's events, checking they are numbered 1, 2, 3, ...
    async fn event_kinds(&self, id: Uuid) -> Vec<String> {
        let events = self.api.store.events(id, 0).await.unwrap();
        let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=events.len() as i64).collect::<Vec<_>>());
        events
            .iter()
            .map(|e| {
                let status = e.data["status"].as_str().map(|s| format!(":{s}"));
                let phase = e.data["phase"].as_str().map(|s| format!(":{s}"));
                format!(
                    "{}{}",
                    e.kind.as_str(),
                    status.or(phase).unwrap_or_default()
                )
            })
            .collect()
    }
}

async fn a_session_runs_to_its_answer(backend: Backend) {
    let stack = Stack::new(backend).await;
    let marker = format!("marker-answer-{backend:?}");
    stack.env.llm.script(
        &marker,
        vec![
            Turn::tool("echo", json!({"text": "hello"})),
            Turn::answer("the answer"),
        ],
    );
    let id = stack.run(&format!("{marker}: go"), json!({})).await;
    assert_eq!(stack.get(id).await.status, SessionStatus::Pending);
    // Followers of the session in the API (event streams, long-polls) are woken by the worker's
    // transitions: through Redis, or on SQLite by the store of this process itself.
    let mut feed = stack.api.store.changes(id).expect("a change feed");
    let session = stack.drive(id).await;
    let woken = tokio::time::timeout(Duration::from_secs(10), feed.changed()).await;
    assert_eq!(woken.ok(), Some(true), "the API's follower was woken");
    assert_eq!(
        (session.status, session.final_answer.as_deref()),
        (SessionStatus::Completed, Some("the answer"))
    );
    assert_eq!(session.steps.len(), 2);
    assert_eq!(
        session.steps[0].observation.as_ref().unwrap()["result"],
        json!({"text": "hello"})
    );
    assert_eq!(session.totals.llm_calls, 2);
    assert_eq!(
        stack.event_kinds(id).await,
        [
            "status:pending",
            "status:running",
            "step:decided",
            "step:observed",
            "step:decided",
            "status:completed",
            "done:completed"
        ]
    );
    let done = stack.api.store.events(id, 6).await.unwrap();
    assert_eq!(done[0].data["totals"]["steps"], json!(2));
    // The listing shows it with its steps.
    let listed: Value = stack
        .http
        .get(format!("{}/v1/agents", stack.url))
        .bearer_auth(&stack.key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["sessions"][0]["session_id"], json!(id.to_string()));
    assert_eq!(listed["sessions"][0]["steps"], json!(2));
    assert_eq!(listed["sessions"][0]["status"], json!("completed"));
    // A redelivered step of a finished session changes nothing.
    agentq_worker::step::run_step(&stack.ctx, StepJob::new(id, 1, None))
        .await
        .unwrap();
    assert_eq!(stack.get(id).await, session);
}

async fn create_is_idempotent_and_cancel_ends_an_idle_session(backend: Backend) {
    let stack = Stack::new(backend).await;
    let body = json!({"messages": [{"role": "user", "content": "once"}], "max_steps": 3});
    let (status, first) = stack
        .post("/v1/agents/run", body.clone(), Some("k-1"))
        .await;
    assert_eq!(status, 202);
    let (status, again) = stack.post("/v1/agents/run", body, Some("k-1")).await;
    assert_eq!((status, &again["session_id"]), (200, &first["session_id"]));
    let changed = json!({"messages": [{"role": "user", "content": "twice"}]});
    let (status, refused) = stack.post("/v1/agents/run", changed, Some("k-1")).await;
    assert_eq!(
        (status, refused["error"]["code"].clone()),
        (409, json!("idempotency_key_reused"))
    );

    let id: Uuid = first["session_id"].as_str().unwrap().parse().unwrap();
    let (status, _) = stack
        .post(&format!("/v1/agents/{id}/cancel"), json!({}), None)
        .await;
    assert_eq!(status, 202);
    let session = stack.get(id).await;
    assert_eq!(session.status, SessionStatus::Cancelled);
    assert_eq!(
        stack.event_kinds(id).await,
        ["status:pending", "status:cancelled", "done:cancelled"]
    );
    // The job still queued for it finds nothing to do.
    agentq_worker::step::run_step(&stack.ctx, StepJob::new(id, 0, None))
        .await
        .unwrap();
    assert_eq!(stack.get(id).await, session);
}

async fn an_approval_resumes_the_session(backend: Backend) {
    let stack = Stack::new(backend).await;
    let marker = format!("marker-approve-{backend:?}");
    stack.env.llm.script(
        &marker,
        vec![
            Turn::tool("echo_approved", json!({"text": "guarded"})),
            Turn::answer("approved and done"),
        ],
    );
    let id = stack
        .run(
            &format!("{marker}: go"),
            json!({"tools": ["echo_approved"]}),
        )
        .await;
    let waiting = stack.drive(id).await;
    assert_eq!(waiting.status, SessionStatus::AwaitingApproval);
    let pending = waiting.pending_approval.clone().unwrap();
    assert_eq!((pending.step, pending.tool.as_str()), (0, "echo_approved"));
    assert_eq!(waiting.steps[0].observation, None, "nothing ran yet");
    let (status, body) = stack
        .post(
            &format!("/v1/agents/{id}/approve"),
            json!({"step": 0, "approved": true, "reason": "fine"}),
            None,
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let session = stack.drive(id).await;
    assert_eq!(
        (session.status, session.final_answer.as_deref()),
        (SessionStatus::Completed, Some("approved and done"))
    );
    let approval = session.steps[0].approval.clone().unwrap();
    assert_eq!(
        (approval.approved, approval.reason.as_deref()),
        (true, Some("fine"))
    );
    assert_eq!(
        session.steps[0].observation.as_ref().unwrap()["result"],
        json!({"text": "guarded"})
    );
}

async fn a_worker_whose_lease_ran_out_changes_nothing(backend: Backend) {
    let stack = Stack::new(backend).await;
    let id = stack.run("stale lease", json!({})).await;
    let store = &stack.ctx.store;
    let Begin::Leased(mut first) = store
        .begin_step(id, 0, "first", Duration::ZERO)
        .await
        .unwrap()
    else {
        panic!("the first worker takes the lease");
    };
    tokio::time::sleep(Duration::from_millis(5)).await;
    let Begin::Leased(second) = store
        .begin_step(id, 0, "second", Duration::from_secs(30))
        .await
        .unwrap()
    else {
        panic!("an expired lease is taken over");
    };
    assert!(second.lease.fence > first.lease.fence);
    assert!(matches!(
        store
            .begin_step(id, 0, "third", Duration::from_secs(30))
            .await
            .unwrap(),
        Begin::Held
    ));
    let decision = Decision {
        thought: Some("too late".into()),
        llm_content: json!([{"type": "text", "text": "too late"}]),
        actions: Vec::new(),
        is_final: true,
        final_answer: Some("stale".into()),
        invalid_output: None,
        started_at: chrono::Utc::now(),
    };
    let refused = store
        .record_decision(&mut first, None, &decision, None)
        .await;
    assert!(
        matches!(refused, Err(StoreError::LeaseLost(_))),
        "{refused:?}"
    );
    assert!(stack.get(id).await.steps.is_empty(), "nothing was stored");
}

async fn the_event_stream_resumes_and_ends(backend: Backend) {
    let stack = Stack::new(backend).await;
    let marker = format!("marker-events-{backend:?}");
    stack.env.llm.script(
        &marker,
        vec![
            Turn::tool("echo", json!({"text": "streamed"})),
            Turn::answer("streamed and done"),
        ],
    );
    let id = stack.run(&format!("{marker}: go"), json!({})).await;
    let url = format!("{}/v1/agents/{id}/events", stack.url);
    // A client following the stream from the start while the steps run.
    let follower = {
        let (http, url, key) = (stack.http.clone(), url.clone(), stack.key.clone());
        tokio::spawn(async move { read_events(&http, &url, &key, None, |_| false).await })
    };
    stack.drive(id).await;
    let (events, ended) = follower.await.unwrap();
    assert!(ended, "the stream ends after done");
    let ids: Vec<i64> = events.iter().map(|e| e.id).collect();
    assert_eq!(ids, (1..=7).collect::<Vec<_>>());
    assert_eq!(events.last().unwrap().event, "done");
    assert_eq!(
        events.last().unwrap().data["data"]["final_answer"],
        json!("streamed and done")
    );
    // Resuming after event 3 gives the rest, each once.
    let (rest, ended) = read_events(&stack.http, &url, &stack.key, Some(3), |_| false).await;
    assert!(ended);
    let rest: Vec<(i64, String)> = rest.into_iter().map(|e| (e.id, e.event)).collect();
    let expected: Vec<(i64, String)> = events[3..]
        .iter()
        .map(|e| (e.id, e.event.clone()))
        .collect();
    assert_eq!(rest, expected);
}

async fn the_listing_pages_newest_first(backend: Backend) {
    let stack = Stack::new(backend).await;
    let mut made = Vec::new();
    for n in 0..5 {
        made.push(stack.run(&format!("listed {n}"), json!({})).await);
    }
    let cancelled = made[1];
    let (status, _) = stack
        .post(&format!("/v1/agents/{cancelled}/cancel"), json!({}), None)
        .await;
    assert_eq!(status, 202);
    let page = |query: String| {
        let (http, url, key) = (stack.http.clone(), stack.url.clone(), stack.key.clone());
        async move {
            http.get(format!("{url}/v1/agents?{query}"))
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let ids = |page: &Value| -> Vec<String> {
        page["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["session_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let first = page("limit=3".into()).await;
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let second = page(format!("limit=3&cursor={cursor}")).await;
    assert_eq!(second["next_cursor"], Value::Null);
    let mut seen = ids(&first);
    seen.extend(ids(&second));
    let newest_first: Vec<String> = made.iter().rev().map(Uuid::to_string).collect();
    assert_eq!(seen, newest_first);
    let only = page("status=cancelled".into()).await;
    assert_eq!(ids(&only), [cancelled.to_string()]);
}

async fn budgets_and_max_steps_end_a_looping_agent(backend: Backend) {
    let stack = Stack::new(backend).await;
    let usage = agentq_cli::stand_in::Usage {
        input_tokens: 900,
        output_tokens: 100,
        ..Default::default()
    };
    let looping = vec![Turn::tool("echo", json!({"text": "again"})).usage(usage); 10];
    let runs = [
        (
            "dollars",
            json!({"max_cost_usd": 0.01}),
            "budget_exceeded",
            3,
        ),
        ("steps", json!({"max_steps": 2}), "max_steps_exceeded", 2),
    ];
    for (what, limits, code, calls) in runs {
        let marker = format!("marker-budget-{what}-{backend:?}");
        stack.env.llm.script(&marker, looping.clone());
        let id = stack.run(&format!("{marker}: loop"), limits).await;
        let session = stack.drive(id).await;
        assert_eq!(session.status, SessionStatus::Failed, "{what}");
        assert_eq!(
            session.error.map(|e| e.code.as_str().to_owned()),
            Some(code.to_owned())
        );
        assert_eq!(stack.env.llm.calls_for(&marker).len(), calls, "{what}");
        // Each call is in the ledger, to the cent.
        assert_eq!(session.totals.llm_calls as usize, calls, "{what}");
    }
}

async fn the_reconciler_expires_fails_overdue_and_repairs(backend: Backend) {
    let stack = Stack::with(
        backend,
        &[
            ("AGENTQ_APPROVAL_TTL_SECS", "1"),
            ("AGENTQ_SESSION_DEADLINE_SECS", "1"),
        ],
    )
    .await;
    let store = &stack.ctx.store;
    // One leader at a time. (Postgres's advisory lock is server-wide: another test's
    // reconciler may hold it, so only the second attempt is asserted.)
    let leader = store.lead().await.unwrap();
    if matches!(backend, Backend::Sqlite) {
        assert!(leader.is_some(), "the first to ask leads");
    }
    if leader.is_some() {
        assert!(store.lead().await.unwrap().is_none(), "a second leader");
    }
    drop(leader);

    let marker = format!("marker-lapse-{backend:?}");
    stack.env.llm.script(
        &marker,
        vec![Turn::tool(
            "echo_approved",
            json!({"text": "never approved"}),
        )],
    );
    let waiting = stack
        .run(
            &format!("{marker}: go"),
            json!({"tools": ["echo_approved"]}),
        )
        .await;
    assert_eq!(
        stack.drive(waiting).await.status,
        SessionStatus::AwaitingApproval
    );
    let idle = stack.run("left alone", json!({})).await;
    // Nobody moves `idle`: the reconciler claims it for a repair, with a new fence.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let repairs = store.claim_stalled(Duration::ZERO, 10).await.unwrap();
    let repaired: Vec<(Uuid, u32)> = repairs
        .iter()
        .map(|r| (r.session_id, r.next_step))
        .collect();
    assert_eq!(repaired, [(idle, 0)]);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(store.expire_lapsed_approvals().await.unwrap(), [waiting]);
    assert_eq!(store.fail_overdue().await.unwrap(), [idle]);
    for (id, code) in [(waiting, "approval_expired"), (idle, "deadline_exceeded")] {
        let session = stack.get(id).await;
        assert_eq!(session.status, SessionStatus::Failed);
        assert_eq!(session.error.unwrap().code.as_str(), code);
        let kinds = stack.event_kinds(id).await;
        assert_eq!(
            kinds[kinds.len() - 2..],
            ["status:failed".to_owned(), "done:failed".to_owned()]
        );
    }
    assert!(store.fail_overdue().await.unwrap().is_empty(), "only once");
}

on_both_backends!(
    a_session_runs_to_its_answer,
    create_is_idempotent_and_cancel_ends_an_idle_session,
    an_approval_resumes_the_session,
    a_worker_whose_lease_ran_out_changes_nothing,
    the_event_stream_resumes_and_ends,
    the_listing_pages_newest_first,
    budgets_and_max_steps_end_a_looping_agent,
    the_reconciler_expires_fails_overdue_and_repairs,
);
