//! The durability promises: duplicate deliveries, fenced leases, cancellation that stops work,
//! approvals, idempotent creation, deadlines, and a queue rebuilt after Redis lost everything.

use std::time::{Duration, Instant};

use agentq_cli::stand_in::Turn;
use agentq_shared::queue::StepJob;
use agentq_shared::schemas::SessionStatus;
use agentq_shared::store::{Begin, Decision, StepRun, StoreError};
use pretty_assertions::assert_eq;
use reqwest::Method;
use serde_json::json;

use crate::harness::{Backend, TestEnv};

async fn a_job_delivered_twice_at_once_makes_one_step(backend: Backend) {
    let mut env = TestEnv::on(backend).await;
    env.start_api().await;
    let key = env.key("acme").await;
    env.llm.script(
        "marker-dup",
        vec![
            Turn::tool("echo", json!({"text": "once", "delay_ms": 300}))
                .delay(Duration::from_millis(500)),
            Turn::answer("done once").delay(Duration::from_millis(500)),
        ],
    );
    let id = env.run(&key, "marker-dup: go", json!({})).await;
    let ctx = env.worker_context().await;
    for step in 0..2 {
        let job = StepJob::new(id, step, None);
        let (a, b) = tokio::join!(
            agentq_worker::step::run_step(&ctx, job.clone()),
            agentq_worker::step::run_step(&ctx, job)
        );
        a.unwrap();
        b.unwrap();
    }
    let session = env.wait_status(&key, id, SessionStatus::Completed).await;
    assert_eq!(session.steps.len(), 2);
    assert_eq!(
        env.llm.calls_for("marker-dup").len(),
        2,
        "one LLM call per step"
    );
    assert_eq!(env.rows("llm_calls", id).await, 2);
    // A late third delivery of a finished step changes nothing.
    agentq_worker::step::run_step(&ctx, StepJob::new(id, 0, None))
        .await
        .unwrap();
    assert_eq!(env.llm.calls_for("marker-dup").len(), 2);
}

/// A process that dies between committing a session's end and writing its snapshot leaves the
/// snapshot behind, and the session never changes again to replace it. The API hears every
/// end from Postgres at its commit and puts the snapshot right.
#[tokio::test]
async fn an_end_whose_snapshot_was_never_written_still_shows() {
    let mut env = TestEnv::new().await;
    env.start_api().await;
    let key = env.key("acme").await;
    // No worker: the session stays pending, with the snapshot the API wrote.
    let id = env.run(&key, "marker-unseen-end: go", json!({})).await;
    let pending = env.session(&key, id).await;
    assert_eq!(pending.status, SessionStatus::Pending);
    // The session ends in Postgres alone, as if its process died right after the commit.
    let durable = agentq_shared::store::Store::connect_durable(env.database_url())
        .await
        .unwrap();
    durable.request_cancel(id, pending.org_id).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let session = env.session(&key, id).await;
        if session.status == SessionStatus::Cancelled {
            assert!(session.version > pending.version, "{session:#?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "polls still show {:?} 3 s after the session ended",
            session.status
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_worker_that_lost_its_lease_cannot_write() {
    let mut env = TestEnv::new().await;
    env.start_api().await;
    let key = env.key("acme").await;
    env.llm.script("marker-fence", vec![]);
    let id = env.run(&key, "marker-fence: hi", json!({})).await;
    let ctx = env.worker_context().await;
    let ttl = Duration::from_secs(30);
    let leased = |begun: Begin| -> Option<StepRun> {
        match begun {
            Begin::Leased(run) => Some(*run),
            _ => None,
        }
    };
    let mut stale =
        leased(ctx.store.begin_step(id, 0, "stale", ttl).await.unwrap()).expect("free lease");
    assert!(
        leased(ctx.store.begin_step(id, 0, "other", ttl).await.unwrap()).is_none(),
        "a live lease is exclusive"
    );
    // The stale holder pauses past its lease; a successor takes over.
    sqlx::query("UPDATE sessions SET lease_until = now() - interval '1 second' WHERE id = $1")
        .bind(id)
        .execute(env.pg())
        .await
        .unwrap();
    let mut successor = leased(ctx.store.begin_step(id, 0, "successor", ttl).await.unwrap())
        .expect("expired lease");
    assert!(successor.lease.fence > stale.lease.fence);
    let decision = Decision {
        thought: None,
        llm_content: json!([{"type": "text", "text": "late"}]),
        actions: vec![],
        is_final: true,
        final_answer: Some("late".into()),
        invalid_output: None,
        started_at: chrono::Utc::now(),
    };
    let refused = ctx
        .store
        .record_decision(&mut stale, None, &decision, None)
        .await
        .unwrap_err();
    assert!(matches!(refused, StoreError::LeaseLost(lost) if lost == id));
    assert!(!ctx.store.renew_lease(&stale.lease, ttl).await.unwrap());
    assert!(matches!(
        ctx.store.advance(&mut stale).await,
        Err(StoreError::LeaseLost(_))
    ));
    assert_eq!(env.rows("steps", id).await, 0);
    ctx.store
        .record_decision(&mut successor, None, &decision, None)
        .await
        .unwrap();
}

async fn cancel_during_a_long_tool_call_stops_it_within_two_seconds(backend: Backend) {
    let (env, key) = TestEnv::running_on(backend, &[]).await;
    env.llm.script(
        "marker-long",
        vec![
            Turn::tool("echo", json!({"text": "slow", "delay_ms": 20000})),
            Turn::answer("never"),
        ],
    );
    let id = env
        .run(&key, "marker-long: take your time", json!({}))
        .await;
    env.wait_until(&key, id, "in its tool call", |s| s.steps.len() == 1)
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asked = Instant::now();
    let (status, _) = env.cancel(&key, id).await;
    assert_eq!(status, 202);
    let session = env.wait_status(&key, id, SessionStatus::Cancelled).await;
    let took = asked.elapsed();
    assert!(took < Duration::from_secs(2), "cancelled after {took:?}");
    let observation = session.steps[0]
        .observation
        .clone()
        .expect("the stopped tool's observation");
    assert_eq!(
        observation["error"],
        json!("stopped: the session was cancelled")
    );
    assert_eq!(observation["result"], json!(null));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        env.llm.calls_for("marker-long").len(),
        1,
        "no LLM call after the cancel"
    );
}

async fn approve_and_reject_resume_the_session_through_the_api(backend: Backend) {
    let (env, key) = TestEnv::running_on(backend, &[]).await;
    let other = env.key("other-org").await;
    for (marker, approved) in [("marker-approve", true), ("marker-reject", false)] {
        env.llm.script(
            marker,
            vec![
                Turn::tool("echo_approved", json!({"text": "guarded"})),
                Turn::answer("all done"),
            ],
        );
        let id = env
            .run(
                &key,
                &format!("{marker}: do it"),
                json!({"tools": ["echo_approved"]}),
            )
            .await;
        let waiting = env.wait_awaiting_approval(&key, id).await;
        let pending = waiting
            .pending_approval
            .clone()
            .expect("the pending call is shown");
        assert_eq!(
            (pending.step, pending.tool.as_str(), pending.args.clone()),
            (0, "echo_approved", json!({"text": "guarded"}))
        );
        // What the tool tells its approver besides the arguments.
        assert_eq!(pending.details, Some(json!({"characters": 7})));
        assert_eq!(
            waiting.steps[0].observation, None,
            "nothing ran before approval"
        );

        let path = format!("/v1/agents/{id}/approve");
        let decision = json!({"step": 0, "approved": approved, "reason": "checked by a human"});
        let (status, _) = env
            .request(Method::POST, &path, Some(&other), Some(decision.clone()))
            .await;
        assert_eq!(status, 404, "another org can't approve");
        let (status, body) = env
            .request(
                Method::POST,
                &path,
                Some(&key),
                Some(json!({"step": 1, "approved": true})),
            )
            .await;
        assert_eq!(
            (status, body["error"]["code"].clone()),
            (409, json!("not_awaiting_approval"))
        );
        let (status, body) = env
            .request(Method::POST, &path, Some(&key), Some(decision))
            .await;
        assert_eq!(status, 202, "{body}");

        let session = env.wait_status(&key, id, SessionStatus::Completed).await;
        let step = &session.steps[0];
        let approval = step
            .approval
            .clone()
            .expect("the decision is stored with the step");
        assert_eq!(
            (approval.approved, approval.reason.as_deref()),
            (approved, Some("checked by a human"))
        );
        assert!(approval.decided_by.is_some());
        let observation = step.observation.clone().expect("observation");
        let second_call = &env.llm.calls_for(marker)[1].request["messages"][2]["content"][0];
        if approved {
            assert_eq!(observation["result"], json!({"text": "guarded"}));
            assert_eq!(second_call["is_error"], json!(false));
        } else {
            assert_eq!(
                observation["error"],
                json!("a human reviewer rejected this tool call: checked by a human")
            );
            assert_eq!(
                second_call["is_error"],
                json!(true),
                "the agent sees the rejection"
            );
        }
        let (status, _) = env
            .request(
                Method::POST,
                &path,
                Some(&key),
                Some(json!({"step": 0, "approved": true})),
            )
            .await;
        assert_eq!(status, 409, "a finished session can't be approved again");
    }
}

async fn an_unanswered_approval_expires(backend: Backend) {
    let (env, key) = TestEnv::running_on(
        backend,
        &[
            ("AGENTQ_APPROVAL_TTL_SECS", "1"),
            ("AGENTQ_RECONCILE_EVERY_MS", "200"),
        ],
    )
    .await;
    env.llm.script(
        "marker-expire",
        vec![
            Turn::tool("echo_approved", json!({"text": "x"})),
            Turn::answer("no"),
        ],
    );
    let id = env
        .run(
            &key,
            "marker-expire: wait",
            json!({"tools": ["echo_approved"]}),
        )
        .await;
    env.wait_awaiting_approval(&key, id).await;
    let session = env.wait_status(&key, id, SessionStatus::Failed).await;
    assert_eq!(session.error.expect("error").code, "approval_expired");
    assert_eq!(session.steps[0].observation, None, "the tool never ran");
    let path = format!("/v1/agents/{id}/approve");
    let (status, _) = env
        .request(
            Method::POST,
            &path,
            Some(&key),
            Some(json!({"step": 0, "approved": true})),
        )
        .await;
    assert_eq!(status, 409);
}

async fn an_idempotency_key_returns_the_same_session(backend: Backend) {
    let mut env = TestEnv::on(backend).await;
    env.start_api().await;
    let key = env.key("acme").await;
    let url = format!("{}/v1/agents/run", env.api_url);
    let post = |idempotency: &str, body: serde_json::Value| {
        env.http
            .post(&url)
            .bearer_auth(&key)
            .header("Idempotency-Key", idempotency)
            .json(&body)
            .send()
    };
    let body = json!({"messages": [{"role": "user", "content": "once"}], "max_steps": 3});
    let first = post("k-1", body.clone()).await.unwrap();
    assert_eq!(first.status(), 202);
    let first: serde_json::Value = first.json().await.unwrap();
    // The same request, keys in another order: the same session.
    let reordered = json!({"max_steps": 3, "messages": [{"content": "once", "role": "user"}]});
    let again = post("k-1", reordered).await.unwrap();
    assert_eq!(again.status(), 200);
    let again: serde_json::Value = again.json().await.unwrap();
    assert_eq!(again["session_id"], first["session_id"]);
    let changed = post(
        "k-1",
        json!({"messages": [{"role": "user", "content": "twice"}]}),
    )
    .await
    .unwrap();
    assert_eq!(changed.status(), 409);
    let changed: serde_json::Value = changed.json().await.unwrap();
    assert_eq!(changed["error"]["code"], json!("idempotency_key_reused"));
    let other = post("k-2", body)
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_ne!(other["session_id"], first["session_id"]);
    let (status, listed) = env
        .request(Method::GET, "/v1/agents", Some(&key), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(listed["sessions"].as_array().map(Vec::len), Some(2));
}

async fn a_session_past_its_deadline_fails(backend: Backend) {
    let (env, key) = TestEnv::running_on(backend, &[("AGENTQ_SESSION_DEADLINE_SECS", "1")]).await;
    env.llm.script(
        "marker-deadline",
        vec![
            Turn::tool("echo", json!({"text": "x", "delay_ms": 10000})),
            Turn::answer("late"),
        ],
    );
    let id = env.run(&key, "marker-deadline: slow", json!({})).await;
    let session = env.wait_status(&key, id, SessionStatus::Failed).await;
    assert_eq!(session.error.expect("error").code, "deadline_exceeded");
    assert_eq!(env.llm.calls_for("marker-deadline").len(), 1);
}

async fn sessions_survive_a_queue_that_lost_everything(backend: Backend) {
    let mut env = TestEnv::on(backend).await;
    env.set("AGENTQ_STALL_AFTER_MS", "1000");
    env.set("AGENTQ_RECONCILE_EVERY_MS", "200");
    env.start_api().await;
    let key = env.key("acme").await;
    env.llm.script(
        "marker-flush",
        vec![
            Turn::tool("echo", json!({"text": "a"})),
            Turn::answer("survived"),
        ],
    );
    let id = env.run(&key, "marker-flush: go", json!({})).await;
    // The queued job vanishes (as in a FLUSHALL, a Redis restart without persistence, or a
    // lost queue file).
    env.lose_the_queue().await;
    env.start_worker();
    let session = env.wait_status(&key, id, SessionStatus::Completed).await;
    assert_eq!(session.final_answer.as_deref(), Some("survived"));
    assert_eq!(session.steps.len(), 2);
}

async fn sigterm_lets_the_running_step_finish(backend: Backend) {
    let mut env = TestEnv::on(backend).await;
    env.set("AGENTQ_SHUTDOWN_GRACE_SECS", "10");
    env.start_api().await;
    let worker = env.start_worker();
    let key = env.key("acme").await;
    env.llm.script(
        "marker-term",
        vec![
            Turn::tool("echo", json!({"text": "finish me", "delay_ms": 1500})),
            Turn::answer("after restart"),
        ],
    );
    let id = env.run(&key, "marker-term: go", json!({})).await;
    env.wait_until(&key, id, "in its tool call", |s| s.steps.len() == 1)
        .await;
    let status = env.terminate(worker).await;
    assert!(status.success(), "worker exit: {status}");
    let session = env.session(&key, id).await;
    let observation = session.steps[0]
        .observation
        .clone()
        .expect("the step finished before exit");
    assert_eq!(observation["result"], json!({"text": "finish me"}));

    env.start_worker();
    let session = env.wait_status(&key, id, SessionStatus::Completed).await;
    assert_eq!(session.final_answer.as_deref(), Some("after restart"));
    assert_eq!(env.llm.calls_for("marker-term").len(), 2);
}

async fn an_llm_call_past_its_timeout_fails_the_session(backend: Backend) {
    let (env, key) = TestEnv::running_on(backend, &[("AGENTQ_LLM_TIMEOUT_SECS", "1")]).await;
    env.llm.script(
        "marker-llm-slow",
        vec![Turn::answer("too late").delay(Duration::from_secs(3))],
    );
    let id = env.run(&key, "marker-llm-slow: hi", json!({})).await;
    let session = env.wait_status(&key, id, SessionStatus::Failed).await;
    let error = session.error.expect("error");
    assert_eq!(error.code, "llm_timeout");
    assert_eq!(error.message, "LLM call timed out after 1s");
    assert_eq!(
        session.totals.llm_calls, 1,
        "the timed-out call is in the ledger"
    );
}

/// A run's own approval window and what happens when it closes undecided: `fail` (the
/// default), `reject` (the held call is refused and the agent goes on) or `approve` (it runs);
/// the step records which, with no key as the decider. The deployment's window (a day) would
/// never close within the test: the run's `approval_timeout` does.
async fn each_on_approval_timeout_choice_happens(backend: Backend) {
    let (env, key) = TestEnv::running_on(backend, &[("AGENTQ_RECONCILE_EVERY_MS", "200")]).await;
    let mut sessions = Vec::new();
    for choice in ["fail", "reject", "approve", "default"] {
        let marker = format!("marker-timeout-{choice}");
        env.llm.script(
            &marker,
            vec![
                Turn::tool("echo_approved", json!({"text": choice})),
                Turn::answer(format!("went on after {choice}")),
            ],
        );
        let mut extra = json!({"tools": ["echo_approved"], "approval_timeout": 1});
        if choice != "default" {
            extra["on_approval_timeout"] = json!(choice);
        }
        let id = env.run(&key, &format!("{marker}: wait"), extra).await;
        sessions.push((choice, id));
    }
    for (choice, id) in sessions {
        // Finishing at all shows the run's window was used: the deployment's is a day.
        let session = env.wait_finished(&key, id).await;
        let step = &session.steps[0];
        match choice {
            "fail" | "default" => {
                assert_eq!(session.status, SessionStatus::Failed, "{choice}");
                assert_eq!(session.error.unwrap().code, "approval_expired");
                assert_eq!(step.observation, None, "{choice}: the tool never ran");
            }
            _ => {
                assert_eq!(session.status, SessionStatus::Completed, "{choice}");
                let approval = step
                    .approval
                    .clone()
                    .expect("the step records the decision");
                assert_eq!(
                    (approval.approved, approval.decided_by),
                    (choice == "approve", None),
                    "{choice}"
                );
                assert!(
                    approval
                        .reason
                        .unwrap_or_default()
                        .contains(&format!("on_approval_timeout={choice}")),
                    "{choice}"
                );
                let observation = step.observation.clone().unwrap();
                if choice == "approve" {
                    assert_eq!(observation["result"], json!({"text": "approve"}));
                } else {
                    assert_eq!(observation["success"], json!(false), "{observation}");
                }
                assert_eq!(
                    session.final_answer.as_deref(),
                    Some(format!("went on after {choice}").as_str())
                );
            }
        }
    }
    // A window must be at least a second (and at most a week).
    let (status, body) = env
        .request(
            Method::POST,
            "/v1/agents/run",
            Some(&key),
            Some(json!({"messages": [{"role": "user", "content": "x"}], "approval_timeout": 0})),
        )
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (422, &json!("invalid_request"))
    );
}

on_both_backends!(
    each_on_approval_timeout_choice_happens,
    a_job_delivered_twice_at_once_makes_one_step,
    cancel_during_a_long_tool_call_stops_it_within_two_seconds,
    approve_and_reject_resume_the_session_through_the_api,
    an_unanswered_approval_expires,
    an_idempotency_key_returns_the_same_session,
    a_session_past_its_deadline_fails,
    sessions_survive_a_queue_that_lost_everything,
    sigterm_lets_the_running_step_finish,
    an_llm_call_past_its_timeout_fails_the_session,
);
