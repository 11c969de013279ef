//! Seeing inside a running system: the event stream (resumed on another API process), the
//! long-poll, the listing, readiness.

use std::time::{Duration, Instant};

use agentq_cli::stand_in::Turn;
use agentq_shared::schemas::SessionStatus;
use pretty_assertions::assert_eq;
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::{Backend, TestEnv};

/// One Server-Sent Event as received.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sse {
    pub id: i64,
    pub event: String,
    pub data: Value,
}

/// Reads events from `url` until `stop` says so or the stream ends; returns them and whether
/// the server ended the stream.
pub(crate) async fn read_events(
    http: &reqwest::Client,
    url: &str,
    key: &str,
    last_event_id: Option<i64>,
    stop: impl Fn(&[Sse]) -> bool,
) -> (Vec<Sse>, bool) {
    let mut request = http.get(url).bearer_auth(key);
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id.to_string());
    }
    let mut response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let (mut buffer, mut events) = (String::new(), Vec::new());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let chunk = tokio::time::timeout_at(deadline.into(), response.chunk())
            .await
            .expect("events within 30 s")
            .unwrap();
        let Some(chunk) = chunk else {
            return (events, true);
        };
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let (mut id, mut event, mut data) = (None, None, None);
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().parse().ok();
                } else if let Some(v) = line.strip_prefix("event:") {
                    event = Some(v.trim().to_owned());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data = serde_json::from_str(v.trim()).ok();
                }
            }
            if let (Some(id), Some(event), Some(data)) = (id, event, data) {
                events.push(Sse { id, event, data });
                if stop(&events) {
                    return (events, false);
                }
            }
        }
    }
}

async fn a_client_that_reconnects_elsewhere_gets_every_event_once_in_order(backend: Backend) {
    let (mut env, key) = TestEnv::running_on(backend, &[]).await;
    let (_, other_api) = env.start_another_api(&[]).await;
    env.llm.script(
        "marker-events",
        vec![
            Turn::tool("echo", json!({"text": "one", "delay_ms": 400})).with_text("first"),
            Turn::tool("echo", json!({"text": "two", "delay_ms": 400})),
            Turn::answer("all done"),
        ],
    );
    let id = env
        .run(&key, "marker-events: go", json!({"tools": ["echo"]}))
        .await;
    let http = reqwest::Client::new();
    // The first connection drops after three events (on the first API process)...
    let url = format!("{}/v1/agents/{id}/events", env.api_url);
    let (first, ended) = read_events(&http, &url, &key, None, |e| e.len() == 3).await;
    assert!(!ended);
    // ...the client resumes on the other process with Last-Event-ID, and reads to the end.
    let resumed_url = format!("{other_api}/v1/agents/{id}/events");
    let last = first.last().unwrap().id;
    let (rest, ended) = read_events(&http, &resumed_url, &key, Some(last), |_| false).await;
    assert!(ended, "the stream ends after done");
    let all: Vec<Sse> = first.into_iter().chain(rest).collect();
    let ids: Vec<i64> = all.iter().map(|e| e.id).collect();
    assert_eq!(ids, (1..=ids.len() as i64).collect::<Vec<_>>(), "{all:#?}");
    let kinds: Vec<&str> = all.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(
        kinds,
        vec![
            "status", "status", "step", "step", "step", "step", "step", "status", "done"
        ],
        "{all:#?}"
    );
    assert_eq!(all[0].data["data"]["status"], json!("pending"));
    assert_eq!(all[1].data["data"]["status"], json!("running"));
    assert_eq!(
        (
            &all[2].data["data"]["phase"],
            &all[2].data["data"]["thought"]
        ),
        (&json!("decided"), &json!("first"))
    );
    assert_eq!(
        all[3].data["data"]["observation"]["result"],
        json!({"text": "one"})
    );
    let done = &all.last().unwrap().data["data"];
    assert_eq!(
        (
            &done["status"],
            &done["final_answer"],
            &done["totals"]["llm_calls"]
        ),
        (&json!("completed"), &json!("all done"), &json!(3))
    );
    // Every event's JSON carries its number and kind.
    assert!(all.iter().all(|e| e.data["seq"] == json!(e.id)));

    // Replaying a finished session: `?after=` works like the header, then the stream ends.
    let (replay, ended) =
        read_events(&http, &format!("{url}?after=6"), &key, None, |_| false).await;
    assert!(ended);
    assert_eq!(
        replay.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![7, 8, 9]
    );
    // Resuming at `done` or past it ends at once with nothing (no wait for events that will
    // never come).
    for after in [9, 10, 1_000_000] {
        let (rest, ended) = read_events(&http, &url, &key, Some(after), |_| false).await;
        assert!(ended && rest.is_empty(), "after {after}: {rest:?}");
    }
    // Another org sees nothing; a malformed Last-Event-ID is refused.
    let other = env.key("other-org").await;
    let response = http.get(&url).bearer_auth(&other).send().await.unwrap();
    assert_eq!(response.status(), 404);
    let response = http
        .get(&url)
        .bearer_auth(&key)
        .header("Last-Event-ID", "yesterday")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
}

async fn long_poll_answers_when_a_step_lands_and_times_out_unchanged(backend: Backend) {
    let (env, key) = TestEnv::running_on(backend, &[]).await;
    env.llm.script(
        "marker-wait",
        vec![
            Turn::tool("echo", json!({"text": "slow", "delay_ms": 1500})),
            Turn::answer("done"),
        ],
    );
    let id = env
        .run(&key, "marker-wait: go", json!({"tools": ["echo"]}))
        .await;
    env.wait_until(&key, id, "in its first step", |s| !s.steps.is_empty())
        .await;
    let asked = Instant::now();
    let (status, body) = env
        .request(
            Method::GET,
            &format!("/v1/agents/{id}?wait=20&after_step=0"),
            Some(&key),
            None,
        )
        .await;
    let took = asked.elapsed();
    assert_eq!(status, 200, "{body}");
    assert!(
        body["steps"].as_array().unwrap().len() >= 2,
        "answered with step 1: {body}"
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
    env.wait_status(&key, id, SessionStatus::Completed).await;

    // Nothing changes while a session waits for approval: the call times out and answers
    // with the session as it is.
    env.llm.script(
        "marker-still",
        vec![
            Turn::tool("echo_approved", json!({"text": "x"})),
            Turn::answer("no"),
        ],
    );
    let still = env
        .run(
            &key,
            "marker-still: wait",
            json!({"tools": ["echo_approved"]}),
        )
        .await;
    let waiting = env.wait_awaiting_approval(&key, still).await;
    let asked = Instant::now();
    let (status, body) = env
        .request(
            Method::GET,
            &format!("/v1/agents/{still}?wait=2&after_step=0"),
            Some(&key),
            None,
        )
        .await;
    let took = asked.elapsed();
    assert_eq!(status, 200);
    assert!(took >= Duration::from_millis(1900), "took {took:?}");
    let unchanged: agentq_shared::schemas::AgentSession = serde_json::from_value(body).unwrap();
    assert_eq!(unchanged, waiting);
    for bad in ["wait=61", "wait=-1", "wait=soon", "wait=1&after_step=x"] {
        let (status, body) = env
            .request(
                Method::GET,
                &format!("/v1/agents/{still}?{bad}"),
                Some(&key),
                None,
            )
            .await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (422, &json!("invalid_request")),
            "{bad}"
        );
    }
}

async fn the_listing_visits_each_session_once_while_new_ones_arrive(backend: Backend) {
    let mut env = TestEnv::on(backend).await;
    env.start_api().await;
    let key = env.key("acme").await;
    let other = env.key("other-org").await;
    let mut existing = Vec::new();
    for i in 0..23 {
        existing.push(env.run(&key, &format!("listed {i}"), json!({})).await);
    }
    let foreign = env.run(&other, "not yours", json!({})).await;
    let mut seen: Vec<Uuid> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        // New sessions arrive between pages.
        env.run(&key, &format!("new during page {pages}"), json!({}))
            .await;
        let path = match &cursor {
            None => "/v1/agents?limit=5".to_owned(),
            Some(c) => format!("/v1/agents?limit=5&cursor={c}"),
        };
        let (status, page) = env.request(Method::GET, &path, Some(&key), None).await;
        assert_eq!(status, 200, "{page}");
        let sessions = page["sessions"].as_array().unwrap();
        assert!(sessions.len() <= 5);
        for s in sessions {
            assert_eq!(s["status"], json!("pending"));
            assert_eq!((&s["steps"], &s["cost_usd"]), (&json!(0), &json!("0")));
            seen.push(s["session_id"].as_str().unwrap().parse().unwrap());
        }
        pages += 1;
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
        assert!(pages < 20, "the pages never ended");
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "a session listed twice");
    for id in &existing {
        assert_eq!(seen.iter().filter(|s| *s == id).count(), 1, "{id}");
    }
    assert!(!seen.contains(&foreign), "another org's session was listed");
    // Newest first.
    let first_page_ids: Vec<Uuid> = seen[..5].to_vec();
    let mut newest_first = first_page_ids.clone();
    newest_first.sort_by(|a, b| b.cmp(a));
    assert_eq!(first_page_ids, newest_first);

    let (status, page) = env
        .request(Method::GET, "/v1/agents?status=completed", Some(&key), None)
        .await;
    assert_eq!((status, page["sessions"].clone()), (200, json!([])));
    for bad in ["limit=0", "limit=101", "status=finished", "cursor=zz"] {
        let (status, body) = env
            .request(Method::GET, &format!("/v1/agents?{bad}"), Some(&key), None)
            .await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (422, &json!("invalid_request")),
            "{bad}"
        );
    }
}

/// A TCP relay to `target` that can be cut, to take a dependency away from one process only.
struct Relay {
    url_port: u16,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Relay {
    async fn start(target: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url_port = listener.local_addr().unwrap().port();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let target = target.to_owned();
        tokio::spawn(async move {
            loop {
                let mut cut = stopped.clone();
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    _ = cut.wait_for(|c| *c) => return,
                };
                let Ok((mut inbound, _)) = accepted else {
                    return;
                };
                let target = target.clone();
                let mut cut = stopped.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.wait_for(|c| *c) => {}
                    }
                });
            }
        });
        Self { url_port, stop }
    }

    fn cut(&self) {
        let _ = self.stop.send(true);
    }
}

#[tokio::test]
async fn readyz_says_which_dependency_does_not_answer() {
    let mut env = TestEnv::new().await;
    env.start_api().await;
    let (status, body) = env.request(Method::GET, "/readyz", None, None).await;
    assert_eq!(
        (status, body),
        (
            200,
            json!({"status": "ready", "postgres": "ok", "redis": "ok"})
        )
    );
    // A second API whose Redis goes through a relay that is then cut.
    let redis_host = url::Url::parse(&crate::harness::redis_url()).unwrap();
    let relay = Relay::start(&format!(
        "{}:{}",
        redis_host.host_str().unwrap(),
        redis_host.port().unwrap_or(6379)
    ))
    .await;
    let relayed = format!("redis://127.0.0.1:{}", relay.url_port);
    let (_, api) = env.start_another_api(&[("REDIS_URL", &relayed)]).await;
    let readyz = || async {
        let response = env.http.get(format!("{api}/readyz")).send().await.unwrap();
        (
            response.status().as_u16(),
            response.json::<Value>().await.unwrap(),
        )
    };
    assert_eq!(readyz().await.0, 200);
    relay.cut();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = readyz().await;
        if status == 503 {
            assert_eq!(
                body,
                json!({"status": "unavailable", "postgres": "ok", "redis": "unavailable"})
            );
            break;
        }
        assert!(Instant::now() < deadline, "still ready: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Liveness does not depend on Redis.
    let health = env.http.get(format!("{api}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn readyz_on_the_embedded_store_names_sqlite_alone() {
    let mut env = TestEnv::on(Backend::Sqlite).await;
    env.start_api().await;
    let (status, body) = env.request(Method::GET, "/readyz", None, None).await;
    assert_eq!(
        (status, body),
        (200, json!({"status": "ready", "sqlite": "ok"}))
    );
}

/// The value of the series `name{labels}` in Prometheus text (labels as written, in any order).
fn series(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(key, _)| {
            let (metric, rest) = key.split_once('{').unwrap_or((key, ""));
            metric == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|(_, value)| value.parse::<f64>().ok())
        .sum()
}

async fn metrics_move_as_a_session_runs(backend: Backend) {
    let mut env = TestEnv::on(backend).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    env.set("AGENTQ_METRICS_LISTEN", &format!("127.0.0.1:{port}"));
    env.start_api().await;
    env.start_worker();
    let key = env.key("acme").await;
    let api_metrics = || async {
        env.http
            .get(format!("{}/metrics", env.api_url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let worker_metrics = || async {
        for _ in 0..100 {
            if let Ok(response) = env
                .http
                .get(format!("http://127.0.0.1:{port}/metrics"))
                .send()
                .await
            {
                return response.text().await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the worker's metrics listener never answered");
    };
    let (api_before, worker_before) = (api_metrics().await, worker_metrics().await);
    env.llm.script(
        "marker-metrics",
        vec![
            Turn::tool("echo", json!({"text": "measured"})),
            Turn::answer("done"),
        ],
    );
    let id = env
        .run(&key, "marker-metrics: go", json!({"tools": ["echo"]}))
        .await;
    env.wait_status(&key, id, SessionStatus::Completed).await;
    let (api_after, worker_after) = (api_metrics().await, worker_metrics().await);
    let delta = |before: &str, after: &str, name: &str, labels: &[(&str, &str)]| {
        series(after, name, labels) - series(before, name, labels)
    };
    assert_eq!(
        delta(
            &api_before,
            &api_after,
            "agentq_sessions_started_total",
            &[]
        ),
        1.0
    );
    let created = [
        ("route", "/v1/agents/run"),
        ("method", "POST"),
        ("status", "202"),
    ];
    assert_eq!(
        delta(
            &api_before,
            &api_after,
            "agentq_http_requests_total",
            &created
        ),
        1.0,
        "{api_after}"
    );
    assert!(
        series(
            &api_after,
            "agentq_http_request_duration_seconds_count",
            &[("route", "/v1/agents/run")]
        ) >= 1.0
    );
    let worker =
        |name: &str, labels: &[(&str, &str)]| delta(&worker_before, &worker_after, name, labels);
    let model = [("model", "claude-sonnet-4-5"), ("outcome", "ok")];
    assert_eq!(
        worker("agentq_llm_calls_total", &model),
        2.0,
        "{worker_after}"
    );
    assert!(worker("agentq_llm_tokens_total", &[("kind", "output")]) > 0.0);
    assert!(worker("agentq_llm_cost_usd_total", &[]) > 0.0);
    assert_eq!(
        worker(
            "agentq_tool_calls_total",
            &[("tool", "echo"), ("outcome", "ok")]
        ),
        1.0
    );
    assert_eq!(
        worker("agentq_steps_total", &[("outcome", "advanced")]),
        1.0
    );
    assert_eq!(worker("agentq_steps_total", &[("outcome", "ended")]), 1.0);
    assert_eq!(
        worker("agentq_sessions_ended_total", &[("status", "completed")]),
        1.0
    );
    let durable = match backend {
        Backend::Postgres => "postgres",
        Backend::Sqlite => "sqlite",
    };
    assert!(worker("agentq_store_round_trips_total", &[("store", durable)]) >= 5.0);
    for state in ["waiting", "running", "dead"] {
        assert!(
            worker_after.contains(&format!("agentq_queue_jobs{{state=\"{state}\"}}")),
            "{worker_after}"
        );
    }
}

/// Every `trace_id` the JSON log lines of this environment's processes carry for `session`,
/// with the binary each came from and the step when there is one.
fn traces_in_logs(env: &TestEnv, session: Uuid) -> Vec<(String, Option<u64>, String)> {
    let mut found = Vec::new();
    let dir = std::env::temp_dir();
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(&format!("{}-agentq", env.redis_prefix)) {
            continue;
        }
        let binary = if name.contains("agentq-api") {
            "api"
        } else {
            "worker"
        };
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        for line in text.lines() {
            let Ok(log) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            for span in log["spans"].as_array().into_iter().flatten() {
                if span["session_id"] == json!(session.to_string())
                    && let Some(trace) = span["trace_id"].as_str()
                {
                    found.push((binary.to_owned(), span["step"].as_u64(), trace.to_owned()));
                }
            }
        }
    }
    found
}

async fn one_session_is_one_trace_across_the_api_and_the_workers(backend: Backend) {
    let mut env = TestEnv::on(backend).await;
    env.set("AGENTQ_LOG_FORMAT", "json");
    env.set("RUST_LOG", "info,agentq_worker::step=debug");
    env.start_api().await;
    env.start_worker();
    env.start_worker();
    let key = env.key("acme").await;
    env.llm.script(
        "marker-trace",
        vec![
            Turn::tool("echo", json!({"text": "traced"})),
            Turn::answer("done"),
        ],
    );
    let id = env
        .run(&key, "marker-trace: go", json!({"tools": ["echo"]}))
        .await;
    env.wait_status(&key, id, SessionStatus::Completed).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let traces = loop {
        let traces = traces_in_logs(&env, id);
        let steps: Vec<u64> = traces.iter().filter_map(|(_, step, _)| *step).collect();
        if traces.iter().any(|(b, _, _)| b == "api") && steps.contains(&0) && steps.contains(&1) {
            break traces;
        }
        assert!(Instant::now() < deadline, "log lines missing: {traces:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let ids: std::collections::BTreeSet<&str> = traces.iter().map(|(_, _, t)| t.as_str()).collect();
    assert_eq!(ids.len(), 1, "one trace id: {traces:?}");
    let trace = ids.into_iter().next().unwrap();
    assert_eq!(trace.len(), 32, "{trace}");
    assert!(trace.chars().all(|c| c.is_ascii_hexdigit()) && trace != "0".repeat(32));
}

on_both_backends!(
    a_client_that_reconnects_elsewhere_gets_every_event_once_in_order,
    long_poll_answers_when_a_step_lands_and_times_out_unchanged,
    the_listing_visits_each_session_once_while_new_ones_arrive,
    metrics_move_as_a_session_runs,
    one_session_is_one_trace_across_the_api_and_the_workers,
);
