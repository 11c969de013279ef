//! `agentq dev`: the whole system in one process on embedded storage. The README's main job runs
//! with neither Postgres nor Redis answering, and a `kill -9` mid-session loses nothing: started
//! again on the same data directory, the session completes with each step recorded once.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use agentq_cli::stand_in::Turn;
use agentq_shared::schemas::SessionStatus;
use serde_json::json;
use tokio::process::{Child, Command};
use uuid::Uuid;

use crate::harness::{TestEnv, binary, fetch_session as session, free_port};

/// Addresses where nothing answers: `agentq dev` must not need them.
const NO_POSTGRES: &str = "postgres://postgres@127.0.0.1:1/nothing";
const NO_REDIS: &str = "redis://127.0.0.1:1";

struct DataDir(PathBuf);

impl DataDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("agentq-dev-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The target directory and cargo profile the test binaries were built into.
fn target_dir() -> (PathBuf, &'static str) {
    let agentq = binary("agentq");
    let out = agentq.parent().expect("a profile directory");
    let profile = match out.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some("release") => "release",
        other => panic!("unexpected output directory {other:?}"),
    };
    (
        out.parent().expect("a target directory").to_owned(),
        profile,
    )
}

#[tokio::test]
async fn the_readme_main_job_runs_without_postgres_or_redis() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    assert!(
        readme.contains("deploy/dev.sh"),
        "the README's main job is deploy/dev.sh"
    );
    let data = DataDir::new();
    let (target, profile) = target_dir();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/dev.sh");
    let mut command = Command::new("bash");
    // What cargo and nextest set for this test would make the script's build see a changed
    // environment (build scripts track CARGO_MANIFEST_DIR) and rebuild; a user has none of it.
    for (var, _) in std::env::vars() {
        if (var.starts_with("CARGO_") && var != "CARGO_HOME") || var.starts_with("NEXTEST") {
            command.env_remove(var);
        }
    }
    command
        .arg(script)
        .arg("What does agentq dev need?")
        .env("CARGO_TARGET_DIR", target)
        .env("AGENTQ_PROFILE", profile)
        .env("AGENTQ_DATA_DIR", &data.0)
        .env("AGENTQ_LISTEN", "127.0.0.1:0")
        .env("DATABASE_URL", NO_POSTGRES)
        .env("REDIS_URL", NO_REDIS)
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("ANTHROPIC_BASE_URL")
        .env_remove("AGENTQ_HOT_COPY")
        .env_remove("AGENTQ_REDIS_PREFIX")
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(300), command.output())
        .await
        .expect("deploy/dev.sh finished within 5 minutes")
        .expect("deploy/dev.sh runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "deploy/dev.sh failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    for shown in [
        "stand-in model",
        "step 0",
        "action:       echo",
        "step 1",
        "final answer:",
        "completed: 2 steps",
    ] {
        assert!(stdout.contains(shown), "{shown:?} not in:\n{stdout}");
    }
    assert!(
        data.0.join("agentq.db").exists(),
        "the data stays in the data dir"
    );
}

/// `agentq dev` on `data`, talking to the test's model, with Postgres and Redis unreachable.
fn start_dev(env: &TestEnv, data: &DataDir, port: u16) -> Child {
    let log = std::fs::File::create(data.0.join(format!("dev-{}.log", Uuid::new_v4())))
        .expect("a log file");
    env.command("agentq")
        .args(["dev", "--workers", "2", "--data-dir"])
        .arg(&data.0)
        .env("AGENTQ_LISTEN", format!("127.0.0.1:{port}"))
        .env("DATABASE_URL", NO_POSTGRES)
        .env("REDIS_URL", NO_REDIS)
        // Short enough that the killed process's lease and jobs are taken over quickly.
        .env("AGENTQ_LEASE_TTL_MS", "2000")
        .env("AGENTQ_HEARTBEAT_MS", "500")
        .env("AGENTQ_RECONCILE_EVERY_MS", "500")
        .env("AGENTQ_STALL_AFTER_MS", "2000")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("agentq dev starts")
}

async fn wait_healthy(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::get(format!("{url}/healthz")).await.is_err() {
        assert!(Instant::now() < deadline, "agentq dev did not answer");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts a session on `question` with the echo tool; its id.
async fn start(http: &reqwest::Client, url: &str, key: &str, question: &str) -> String {
    let created: serde_json::Value = http
        .post(format!("{url}/v1/agents/run"))
        .bearer_auth(key)
        .json(&json!({"messages": [{"role": "user", "content": question}], "tools": ["echo"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    created["session_id"]
        .as_str()
        .expect("a session id")
        .to_owned()
}

#[tokio::test]
async fn a_kill_9_mid_session_loses_and_repeats_nothing() {
    let env = TestEnv::new().await;
    let data = DataDir::new();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    env.llm.script(
        "marker-dev-kill",
        vec![
            Turn::tool("echo", json!({"text": "first"})),
            // The process is killed while this call is in flight.
            Turn::tool("echo", json!({"text": "second"})).delay(Duration::from_secs(3)),
            Turn::answer("survived"),
        ],
    );
    let mut dev = start_dev(&env, &data, port);
    wait_healthy(&url).await;
    let key = std::fs::read_to_string(data.0.join("dev-key")).expect("the dev key is kept");
    let key = key.trim();
    let http = reqwest::Client::new();
    let id = start(&http, &url, key, "marker-dev-kill: go").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while session(&http, &url, key, &id)
        .await
        .steps
        .first()
        .and_then(|s| s.finished_at)
        .is_none()
    {
        assert!(Instant::now() < deadline, "step 0 did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Step 1's model call is now in flight (it answers after 3 s).
    tokio::time::sleep(Duration::from_millis(500)).await;
    dev.start_kill().unwrap();
    dev.wait().await.unwrap();

    let mut dev = start_dev(&env, &data, port);
    wait_healthy(&url).await;
    let again = std::fs::read_to_string(data.0.join("dev-key")).unwrap();
    assert_eq!(again.trim(), key, "the same dev key after a restart");
    let deadline = Instant::now() + Duration::from_secs(60);
    let finished = loop {
        let s = session(&http, &url, key, &id).await;
        if s.status.is_terminal() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the session did not finish: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = dev.start_kill();
    assert_eq!(
        (finished.status, finished.final_answer.as_deref()),
        (SessionStatus::Completed, Some("survived"))
    );
    let indexes: Vec<u32> = finished.steps.iter().map(|s| s.index).collect();
    assert_eq!(indexes, [0, 1, 2], "each step recorded once");
    let observed: Vec<_> = finished
        .steps
        .iter()
        .filter_map(|s| s.observation.as_ref().map(|o| o["result"].clone()))
        .collect();
    assert_eq!(
        observed,
        [json!({"text": "first"}), json!({"text": "second"})]
    );
    // The event log, read from the data directory: numbered without gaps, each step decided
    // and each call observed once.
    let store = agentq_shared::store::Store::connect_durable(&format!(
        "sqlite://{}",
        data.0.join("agentq.db").display()
    ))
    .await
    .unwrap();
    let events = store.events(id.parse().unwrap(), 0).await.unwrap();
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=events.len() as i64).collect::<Vec<_>>());
    let phases: Vec<(u64, String)> = events
        .iter()
        .filter_map(|e| {
            Some((
                e.data["step"].as_u64()?,
                e.data["phase"].as_str()?.to_owned(),
            ))
        })
        .collect();
    let expected: Vec<(u64, String)> = [
        (0, "decided"),
        (0, "observed"),
        (1, "decided"),
        (1, "observed"),
        (2, "decided"),
    ]
    .into_iter()
    .map(|(s, p)| (s, p.to_owned()))
    .collect();
    assert_eq!(phases, expected);
    // Step 0's model call was made once; step 1's at most twice (the first was cut off).
    let calls = env.llm.calls_for("marker-dev-kill").len();
    assert!((3..=4).contains(&calls), "{calls} model calls");
}

#[tokio::test]
async fn the_board_metrics_readiness_and_viewer_work_in_dev_mode() {
    let env = TestEnv::new().await;
    let data = DataDir::new();
    let (port, admin_port) = (free_port(), free_port());
    let (url, admin) = (
        format!("http://127.0.0.1:{port}"),
        format!("http://127.0.0.1:{admin_port}"),
    );
    let token = "dev-admin-token-0123456789";
    env.llm.script(
        "marker-dev-board",
        vec![
            Turn::tool("echo", json!({"text": "queued"})),
            Turn::answer("seen"),
        ],
    );
    let log = std::fs::File::create(data.0.join("dev.log")).unwrap();
    let mut dev = env
        .command("agentq")
        .args(["dev", "--workers", "3", "--data-dir"])
        .arg(&data.0)
        .env("AGENTQ_LISTEN", format!("127.0.0.1:{port}"))
        .env("AGENTQ_ADMIN_LISTEN", format!("127.0.0.1:{admin_port}"))
        .env("AGENTQ_ADMIN_TOKEN", token)
        .env("DATABASE_URL", NO_POSTGRES)
        .env("REDIS_URL", NO_REDIS)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    wait_healthy(&url).await;
    let http = reqwest::Client::new();
    let key = std::fs::read_to_string(data.0.join("dev-key")).unwrap();
    let id = start(&http, &url, key.trim(), "marker-dev-board: go").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !session(&http, &url, key.trim(), &id)
        .await
        .status
        .is_terminal()
    {
        assert!(Instant::now() < deadline, "the session did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let get = |path: &str, auth: bool| {
        let request = http.get(format!("{admin}/api/v1/{path}"));
        let request = if auth {
            request.bearer_auth(token)
        } else {
            request
        };
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (
                status,
                response
                    .json::<serde_json::Value>()
                    .await
                    .unwrap_or_default(),
            )
        }
    };
    assert_eq!(
        get("queues", false).await.0,
        401,
        "the board needs the token"
    );
    let (status, queues) = get("queues", true).await;
    assert_eq!(status, 200);
    assert_eq!(queues[0]["name"], json!("agentq:steps"), "{queues}");
    let (_, workers) = get("workers", true).await;
    assert_eq!(workers.as_array().map(Vec::len), Some(3), "{workers}");
    // The session's two step jobs show as done, named by the queue's own ids.
    let deadline = Instant::now() + Duration::from_secs(30);
    let done = loop {
        let (_, tasks) = get("queues/agentq:steps/tasks?status=Done", true).await;
        let keys: Vec<String> = tasks
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["ctx"]["idempotency_key"].as_str().map(str::to_owned))
            .collect();
        if keys.len() >= 2 || Instant::now() > deadline {
            break keys;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut steps: Vec<&str> = done.iter().filter_map(|k| k.rsplit(':').next()).collect();
    steps.sort_unstable();
    assert_eq!(steps, ["0", "1"], "{done:?}");
    // /metrics on the API covers the workers of the process too.
    let metrics = http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("agentq_steps_total"), "{metrics}");
    // So do readiness (naming SQLite alone) and the session viewer.
    let ready: serde_json::Value = http
        .get(format!("{url}/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        ready,
        serde_json::json!({"status": "ready", "sqlite": "ok"})
    );
    let viewer = http.get(format!("{url}/ui")).send().await.unwrap();
    assert_eq!(viewer.status(), 200);
    let _ = dev.start_kill();
}
