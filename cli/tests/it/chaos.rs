//! The chaos test: 30 sessions of five steps (web_fetch GET and POST against a local server, a
//! slow echo) through three worker processes while a worker is SIGKILLed every two seconds and
//! replaced, the queue's Redis is flushed once and restarted once. Every session must complete
//! with each step recorded once, no POST sent twice (where a crash hid its outcome the
//! observation says so), and totals equal to the cost ledger.
//!
//! It runs its own redis-server, so flushing and restarting it touches no other test.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentq_cli::stand_in::Turn;
use agentq_shared::schemas::SessionStatus;
use axum::extract::State;
use axum::routing::{get, post};
use serde_json::json;
use tokio::process::{Child, Command};

use crate::harness::TestEnv;

const SESSIONS: usize = 30;
const POST_STEPS: [usize; 2] = [1, 3];

/// A redis-server of this test's own, without persistence: a restart loses everything.
struct PrivateRedis {
    port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    async fn start(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("redis-server is needed for the chaos test ({e}); deploy/ensure-services.sh installs it"));
        let redis = Self {
            port,
            child: Some(child),
        };
        redis.wait_ready().await;
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(client) = redis::Client::open(self.url())
                && let Ok(mut conn) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("private redis-server did not start");
    }

    async fn flushall(&self) {
        let client = redis::Client::open(self.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    }

    async fn restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
        *self = Self::start(self.port).await;
    }
}

type Effects = Arc<Mutex<HashMap<String, u32>>>;

/// Pages to GET and an endpoint whose POSTs are counted by body.
async fn effects_server() -> (String, Effects) {
    let effects: Effects = Arc::default();
    let app = axum::Router::new()
        .route("/page/{n}", get(|| async { "a page about agentq" }))
        .route(
            "/effect",
            post(|State(effects): State<Effects>, body: String| async move {
                *effects.lock().unwrap().entry(body).or_default() += 1;
                "recorded"
            }),
        )
        .with_state(effects.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{address}"), effects)
}

fn script(base: &str, i: usize) -> Vec<Turn> {
    let pause = Duration::from_millis(300);
    let fetch = |method: &str, path: String, body: Option<String>| {
        let mut args = json!({"url": format!("{base}{path}"), "method": method});
        if let Some(body) = body {
            args["body"] = json!(body);
        }
        Turn::tool("web_fetch", args).delay(pause)
    };
    vec![
        fetch("GET", format!("/page/{i}"), None),
        fetch("POST", "/effect".into(), Some(format!("chaos-{i}-1"))),
        Turn::tool("echo", json!({"text": "thinking", "delay_ms": 800})).delay(pause),
        fetch("POST", "/effect".into(), Some(format!("chaos-{i}-3"))),
        Turn::answer(format!("session {i} done")).delay(pause),
    ]
}

#[tokio::test]
async fn sessions_survive_killed_workers_and_lost_redis() {
    let mut env = TestEnv::new().await;
    let redis_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut redis = PrivateRedis::start(redis_port).await;
    let (base, effects) = effects_server().await;
    for (var, value) in [
        ("REDIS_URL", redis.url().as_str()),
        ("AGENTQ_WEB_FETCH_ALLOW", "127.0.0.1/32"),
        ("AGENTQ_LEASE_TTL_MS", "2000"),
        ("AGENTQ_HEARTBEAT_MS", "1000"),
        ("AGENTQ_MISSED_HEARTBEATS", "3"),
        ("AGENTQ_STALL_AFTER_MS", "3000"),
        ("AGENTQ_RECONCILE_EVERY_MS", "500"),
        ("AGENTQ_LLM_ATTEMPTS", "3"),
    ] {
        env.set(var, value);
    }
    env.start_api().await;
    let mut workers: Vec<usize> = (0..3).map(|_| env.start_worker()).collect();
    let key = env.key("chaos").await;

    let started = Instant::now();
    let deadline = started + Duration::from_secs(180);
    let mut ids = Vec::new();
    let mut kills = 0;
    let (mut flushed, mut restarted) = (false, false);
    let mut next_session = Instant::now();
    let mut next_kill = Instant::now() + Duration::from_secs(2);
    // Chaos goes on until every session has finished.
    loop {
        if ids.len() < SESSIONS && Instant::now() >= next_session {
            let i = ids.len();
            env.llm.script(&format!("chaos-{i}:"), script(&base, i));
            let tools = json!({"tools": ["web_fetch", "echo"], "max_steps": 8});
            ids.push(
                env.run(
                    &key,
                    &format!("chaos-{i}: fetch, post, think, post, answer"),
                    tools,
                )
                .await,
            );
            next_session = Instant::now() + Duration::from_millis(500);
        }
        if Instant::now() >= next_kill {
            let victim = workers.remove(0);
            env.kill(victim).await;
            workers.push(env.start_worker());
            kills += 1;
            next_kill = Instant::now() + Duration::from_secs(2);
        }
        if !flushed && started.elapsed() > Duration::from_secs(5) {
            redis.flushall().await;
            flushed = true;
        }
        if !restarted && started.elapsed() > Duration::from_secs(11) {
            redis.restart().await;
            restarted = true;
        }
        let unfinished: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM sessions WHERE status NOT IN ('completed', 'failed', 'cancelled')",
        )
        .fetch_one(env.pg())
        .await
        .unwrap();
        if ids.len() == SESSIONS && flushed && restarted && unfinished == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{unfinished} sessions unfinished after {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for &id in &ids {
        let status: String = sqlx::query_scalar("SELECT status FROM sessions WHERE id = $1")
            .bind(id)
            .fetch_one(env.pg())
            .await
            .unwrap();
        assert_eq!(status, "completed", "session {id}");
    }
    assert!(kills >= 6, "only {kills} workers were killed");

    let effects = effects.lock().unwrap().clone();
    let mut unknown = 0;
    for (i, &id) in ids.iter().enumerate() {
        let (count, max): (i64, i32) =
            sqlx::query_as("SELECT count(*), max(step_index) FROM steps WHERE session_id = $1")
                .bind(id)
                .fetch_one(env.pg())
                .await
                .unwrap();
        assert_eq!((count, max), (5, 4), "session {i}: steps 0..=4, each once");
        for step in POST_STEPS {
            let sent = effects
                .get(&format!("chaos-{i}-{step}"))
                .copied()
                .unwrap_or(0);
            assert!(sent <= 1, "session {i} step {step}: POST sent {sent} times");
            let observation: serde_json::Value = sqlx::query_scalar(
                "SELECT observation FROM steps WHERE session_id = $1 AND step_index = $2",
            )
            .bind(id)
            .bind(step as i32)
            .fetch_one(env.pg())
            .await
            .unwrap();
            if observation["success"] == json!(true) {
                assert_eq!(sent, 1, "session {i} step {step}: success without the POST");
            } else {
                let error = observation["error"].as_str().unwrap_or_default();
                assert!(
                    error.starts_with("interrupted, outcome unknown"),
                    "session {i} step {step}: {error}"
                );
                unknown += 1;
            }
        }
        // Totals are the ledger's sums, to the token and the cent.
        let session = env.session(&key, id).await;
        assert_eq!(session.status, SessionStatus::Completed);
        let (input, output, calls, cost): (i64, i64, i64, Option<rust_decimal::Decimal>) = sqlx::query_as(
            "SELECT sum(input_tokens)::bigint, sum(output_tokens)::bigint, count(*), sum(cost_usd)
             FROM llm_calls WHERE session_id = $1",
        )
        .bind(id)
        .fetch_one(env.pg())
        .await
        .unwrap();
        assert_eq!(
            (
                session.totals.input_tokens as i64,
                session.totals.output_tokens as i64,
                session.totals.llm_calls as i64
            ),
            (input, output, calls)
        );
        assert_eq!(session.totals.cost_usd, cost.map(|c| c.normalize()));
    }
    println!(
        "chaos: {kills} workers killed, Redis flushed and restarted, {unknown} POSTs with unknown outcome, {:?}",
        started.elapsed()
    );
}

/// Counts requests per path; the first request to each path hangs, holding its worker mid-call.
async fn hanging_server() -> (String, Effects) {
    let counts: Effects = Arc::default();
    let handler = |State(counts): State<Effects>, uri: axum::http::Uri| async move {
        let seen = {
            let mut counts = counts.lock().unwrap();
            let count = counts.entry(uri.path().to_owned()).or_default();
            *count += 1;
            *count
        };
        if seen == 1 {
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
        "answered"
    };
    let app = axum::Router::new()
        .route("/{name}", get(handler).post(handler))
        .with_state(counts.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{address}"), counts)
}

#[tokio::test]
async fn a_crash_mid_call_reruns_a_get_but_never_a_post() {
    let mut env = TestEnv::new().await;
    let (base, counts) = hanging_server().await;
    for (var, value) in [
        ("AGENTQ_WEB_FETCH_ALLOW", "127.0.0.1/32"),
        ("AGENTQ_LEASE_TTL_MS", "2000"),
        ("AGENTQ_HEARTBEAT_MS", "1000"),
        ("AGENTQ_MISSED_HEARTBEATS", "2"),
    ] {
        env.set(var, value);
    }
    env.start_api().await;
    let key = env.key("acme").await;
    for (method, path) in [("POST", "/post-once"), ("GET", "/get-again")] {
        let marker = format!("marker-crash-{method}");
        env.llm.script(
            &marker,
            vec![
                Turn::tool(
                    "web_fetch",
                    json!({"url": format!("{base}{path}"), "method": method}),
                ),
                Turn::answer("done"),
            ],
        );
        let worker = env.start_worker();
        let id = env
            .run(
                &key,
                &format!("{marker}: go"),
                json!({"tools": ["web_fetch"]}),
            )
            .await;
        // The request reached the server, which holds it: the worker dies mid-call.
        let deadline = Instant::now() + Duration::from_secs(20);
        while counts.lock().unwrap().get(path).copied().unwrap_or(0) == 0 {
            assert!(Instant::now() < deadline, "{method} never arrived");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        env.kill(worker).await;
        let replacement = env.start_worker();
        let session = env.wait_status(&key, id, SessionStatus::Completed).await;
        // One worker at a time: the next round's call must land on the worker it kills.
        env.kill(replacement).await;
        let observation = session.steps[0].observation.clone().expect("observation");
        let sent = counts.lock().unwrap().get(path).copied().unwrap_or(0);
        if method == "POST" {
            assert_eq!(sent, 1, "the POST was not sent again");
            let error = observation["error"].as_str().unwrap_or_default();
            assert!(
                error.starts_with("interrupted, outcome unknown"),
                "{observation}"
            );
        } else {
            assert_eq!(sent, 2, "the GET ran again");
            assert_eq!(observation["success"], json!(true), "{observation}");
        }
    }
}
