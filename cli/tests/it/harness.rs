//! Per-test environment: a fresh database and Redis prefix (or, on the embedded back end, a fresh
//! SQLite data directory and no Redis at all), the fake LLM in-process, and the real binaries as
//! child processes (killed when the test ends).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use agentq_cli::stand_in::FakeLlm;
use agentq_shared::schemas::{AgentSession, SessionStatus};
use serde_json::Value;
use tokio::process::{Child, Command};
use uuid::Uuid;

pub const WAIT: Duration = Duration::from_secs(30);

pub fn admin_database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A binary of this workspace, next to the `agentq` binary cargo built for this test.
pub fn binary(name: &str) -> PathBuf {
    let cli = PathBuf::from(env!("CARGO_BIN_EXE_agentq"));
    let path = cli.with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first with `cargo build --workspace --bins` \
         (add --release for benchmarks; deploy/test.sh and deploy/bench.sh do)",
        path.display()
    );
    path
}

/// `GET /v1/agents/{id}` on the API at `url` with `key`.
pub async fn fetch_session(http: &reqwest::Client, url: &str, key: &str, id: &str) -> AgentSession {
    http.get(format!("{url}/v1/agents/{id}"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// The durable store and queue a test runs on: Postgres with Redis (separate processes, the
/// production topology), or the embedded store `agentq dev` uses (SQLite files in a directory of
/// the test's own, the queue on apalis-sqlite, no hot copy and no Redis).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// Runs each named scenario (`async fn name(backend: Backend)`) once per back end, as the tests
/// `postgres::name` and `sqlite::name` of the calling module.
macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {
        mod postgres {
            $(#[tokio::test]
            async fn $scenario() {
                super::$scenario($crate::harness::Backend::Postgres).await;
            })*
        }
        mod sqlite {
            $(#[tokio::test]
            async fn $scenario() {
                super::$scenario($crate::harness::Backend::Sqlite).await;
            })*
        }
    };
}

/// Where nothing listens (the embedded back end must never reach for Redis).
pub const NO_REDIS: &str = "redis://127.0.0.1:1";

/// A new, empty database on the Postgres at `DATABASE_URL`: its name and URL.
async fn fresh_postgres_database() -> (String, String) {
    let admin_url = admin_database_url();
    let admin = sqlx::PgPool::connect(&admin_url).await.unwrap_or_else(|e| {
        panic!(
            "Postgres is not reachable at {admin_url} ({e}). Start it with \
             deploy/ensure-services.sh, or set DATABASE_URL to a server where user can CREATE DATABASE"
        )
    });
    let database = format!("agentq_test_{}", Uuid::new_v4().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}")))
        .execute(&admin)
        .await
        .unwrap_or_else(|e| panic!("cannot create test database: {e}"));
    admin.close().await;
    let mut database_url = url::Url::parse(&admin_url).expect("DATABASE_URL is a URL");
    database_url.set_path(&database);
    (database, database_url.to_string())
}

/// Fails with how to start Redis when it does not answer at `REDIS_URL`.
async fn check_redis() {
    let redis = redis::Client::open(redis_url()).expect("REDIS_URL is a Redis URL");
    let mut conn = redis
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "Redis is not reachable at {} ({e}). Start it with deploy/ensure-services.sh",
                redis_url()
            )
        });
    let _: String = redis::cmd("PING")
        .query_async(&mut conn)
        .await
        .expect("Redis answers PING");
}

pub struct TestEnv {
    pub llm: FakeLlm,
    pub backend: Backend,
    /// The Postgres database of the test (dropped at the end), on the Postgres back end.
    database: Option<String>,
    /// The SQLite data directory of the test (removed at the end), on the embedded back end.
    data_dir: Option<PathBuf>,
    database_url: String,
    pub redis_prefix: String,
    pub api_url: String,
    pub http: reqwest::Client,
    pg: Option<sqlx::PgPool>,
    /// The store on the test's database (no hot copy), for keys.
    pub store: agentq_shared::store::Store,
    env: Vec<(String, String)>,
    children: Vec<Child>,
}

impl TestEnv {
    /// A fresh Postgres database and Redis prefix and a running fake LLM; no agentq process yet.
    pub async fn new() -> Self {
        Self::on(Backend::Postgres).await
    }

    /// A fresh store on `backend` and a running fake LLM; no agentq process yet.
    pub async fn on(backend: Backend) -> Self {
        let llm = FakeLlm::new();
        let llm_addr = llm.spawn().await.expect("fake LLM starts");
        let redis_prefix = format!("agentq-test-{}", Uuid::new_v4().simple());
        let (database, data_dir, database_url, pg) = match backend {
            Backend::Postgres => {
                let (database, url) = fresh_postgres_database().await;
                check_redis().await;
                let pg = sqlx::PgPool::connect(&url).await.expect("test database");
                (Some(database), None, url, Some(pg))
            }
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join(&redis_prefix);
                std::fs::create_dir_all(&dir).expect("a data directory");
                let url = format!("sqlite://{}", dir.join("agentq.db").display());
                (None, Some(dir), url, None)
            }
        };
        let api_url = format!("http://127.0.0.1:{}", free_port());
        let mut env: Vec<(String, String)> = vec![
            ("DATABASE_URL".into(), database_url.clone()),
            ("REDIS_URL".into(), redis_url()),
            ("AGENTQ_REDIS_PREFIX".into(), redis_prefix.clone()),
            (
                "AGENTQ_LISTEN".into(),
                api_url.trim_start_matches("http://").into(),
            ),
            ("AGENTQ_URL".into(), api_url.clone()),
            ("ANTHROPIC_API_KEY".into(), "test-key".into()),
            ("ANTHROPIC_BASE_URL".into(), format!("http://{llm_addr}")),
            ("AGENTQ_TEST_TOOLS".into(), "true".into()),
            ("AGENTQ_LLM_ATTEMPTS".into(), "1".into()),
            // Small enough that an oversized test body still fits in loopback socket buffers,
            // so the client finishes sending before the API answers 413.
            ("AGENTQ_MAX_BODY_BYTES".into(), "16384".into()),
            ("RUST_LOG".into(), "info".into()),
        ];
        if backend == Backend::Sqlite {
            env.retain(|(k, _)| k != "REDIS_URL");
            env.push(("REDIS_URL".into(), NO_REDIS.into()));
            env.push(("AGENTQ_HOT_COPY".into(), "none".into()));
        }
        // The test's own view of the store, to create keys and check what the processes wrote.
        let store = agentq_shared::store::Store::connect_durable(&database_url)
            .await
            .expect("test database");
        store.migrate().await.expect("migrations apply");
        Self {
            llm,
            backend,
            database,
            data_dir,
            database_url,
            redis_prefix,
            api_url,
            http: reqwest::Client::new(),
            pg,
            store,
            env,
            children: Vec::new(),
        }
    }

    /// The durable store's `DATABASE_URL` (a Postgres or `sqlite://` URL).
    pub fn database_url(&self) -> &str {
        &self.database_url
    }

    /// How many rows of `table` (steps, llm_calls, session_events, ...) belong to the session,
    /// read straight from the durable store on either back end.
    pub async fn rows(&self, table: &str, session: Uuid) -> i64 {
        match self.backend {
            Backend::Postgres => {
                let query = format!("SELECT count(*) FROM {table} WHERE session_id = $1");
                sqlx::query_scalar(sqlx::AssertSqlSafe(query))
                    .bind(session)
                    .fetch_one(self.pg())
                    .await
                    .unwrap_or_else(|e| panic!("counting {table}: {e}"))
            }
            Backend::Sqlite => {
                let pool = self.sqlite().await;
                let query = format!("SELECT count(*) FROM {table} WHERE session_id = ?1");
                let rows = sqlx::query_scalar(sqlx::AssertSqlSafe(query))
                    .bind(session)
                    .fetch_one(&pool)
                    .await
                    .unwrap_or_else(|e| panic!("counting {table}: {e}"));
                pool.close().await;
                rows
            }
        }
    }

    /// Empties the step queue behind the processes' backs: every Redis key of the test (as a
    /// FLUSHALL would), or every job in the embedded queue's file. Panics when there was nothing
    /// to lose.
    pub async fn lose_the_queue(&self) {
        match self.backend {
            Backend::Postgres => {
                let mut redis = self.redis().await;
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg(format!("{}*", self.redis_prefix))
                    .query_async(&mut redis)
                    .await
                    .expect("KEYS");
                assert!(!keys.is_empty(), "nothing queued in Redis");
                let _: () = redis::cmd("DEL")
                    .arg(keys)
                    .query_async(&mut redis)
                    .await
                    .expect("DEL");
            }
            Backend::Sqlite => {
                let dir = self.data_dir.as_ref().expect("a data directory");
                let url = format!("sqlite://{}", dir.join("queue.db").display());
                let queue = sqlx::SqlitePool::connect(&url)
                    .await
                    .expect("the queue's file");
                let lost = sqlx::query("DELETE FROM Jobs")
                    .execute(&queue)
                    .await
                    .expect("DELETE FROM Jobs")
                    .rows_affected();
                assert!(lost > 0, "nothing queued in {url}");
                queue.close().await;
            }
        }
    }

    /// Makes the durable store refuse, from now on, every update of a step whose observations
    /// contain `marker` (a trigger standing for any fault of the database).
    pub async fn refuse_step_updates_containing(&self, marker: &str) {
        assert!(
            marker.chars().all(|c| c.is_ascii_alphanumeric()),
            "{marker}"
        );
        match self.backend {
            Backend::Postgres => {
                let sql = format!(
                    "CREATE FUNCTION refuse_marked() RETURNS trigger LANGUAGE plpgsql AS $$
                     BEGIN
                       IF NEW.observations::text LIKE '%{marker}%' THEN
                         RAISE EXCEPTION 'this database refuses the observation';
                       END IF;
                       RETURN NEW;
                     END $$;
                     CREATE TRIGGER refuse_marked BEFORE UPDATE ON steps
                       FOR EACH ROW EXECUTE FUNCTION refuse_marked();"
                );
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(self.pg())
                    .await
                    .expect("the trigger is created");
            }
            Backend::Sqlite => {
                let pool = self.sqlite().await;
                let sql = format!(
                    "CREATE TRIGGER refuse_marked BEFORE UPDATE ON steps
                     WHEN NEW.observations LIKE '%{marker}%'
                     BEGIN SELECT RAISE(ABORT, 'this database refuses the observation'); END;"
                );
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&pool)
                    .await
                    .expect("the trigger is created");
                pool.close().await;
            }
        }
    }

    /// The test's own connection to the embedded store's file.
    pub async fn sqlite(&self) -> sqlx::SqlitePool {
        sqlx::SqlitePool::connect(&self.database_url)
            .await
            .expect("the SQLite store opens")
    }

    /// The test's Postgres database, for tests that read or change it directly (they run on the
    /// Postgres back end only).
    pub fn pg(&self) -> &sqlx::PgPool {
        self.pg
            .as_ref()
            .expect("this test reads Postgres directly: run it on the Postgres back end")
    }

    /// A fresh environment with `vars` set, the API and one worker running, and a key of org
    /// "acme".
    pub async fn running(vars: &[(&str, &str)]) -> (Self, String) {
        Self::running_on(Backend::Postgres, vars).await
    }

    /// [`TestEnv::running`] on `backend`.
    pub async fn running_on(backend: Backend, vars: &[(&str, &str)]) -> (Self, String) {
        let mut env = Self::on(backend).await;
        for (var, value) in vars {
            env.set(var, value);
        }
        env.start_api().await;
        env.start_worker();
        let key = env.key("acme").await;
        (env, key)
    }

    /// Sets a variable for the processes started from now on.
    pub fn set(&mut self, var: &str, value: &str) {
        self.env.retain(|(k, _)| k != var);
        self.env.push((var.to_owned(), value.to_owned()));
    }

    /// The API's state in this process, configured like the API binary, and the address it
    /// serves on (a port of its own, not `api_url`).
    pub async fn api_in_process(&self) -> (agentq_api::AppState, String) {
        let env = agentq_shared::config::Env::from_pairs(&self.env);
        let config = agentq_shared::config::ApiConfig::from_env(&env).expect("api config");
        let state = agentq_api::AppState::build(config)
            .await
            .expect("api state");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let address = listener.local_addr().expect("address");
        let app = agentq_api::app(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (state, format!("http://{address}"))
    }

    /// A worker's context in this process, configured like the worker binaries.
    pub async fn worker_context(&self) -> std::sync::Arc<agentq_worker::Context> {
        let env = agentq_shared::config::Env::from_pairs(&self.env);
        let config = agentq_shared::config::WorkerConfig::from_env(&env).expect("worker config");
        std::sync::Arc::new(
            agentq_worker::Context::build(config)
                .await
                .expect("worker context"),
        )
    }

    pub fn command(&self, binary_name: &str) -> Command {
        let mut command = Command::new(binary(binary_name));
        command.env_clear();
        command.env("PATH", std::env::var("PATH").unwrap_or_default());
        command.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        command.kill_on_drop(true);
        command
    }

    fn spawn(&mut self, binary_name: &str) -> usize {
        let log = std::env::temp_dir().join(format!(
            "{}-{binary_name}-{}.log",
            self.redis_prefix,
            self.children.len()
        ));
        let file = std::fs::File::create(&log).expect("log file");
        let child = self
            .command(binary_name)
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {binary_name}: {e}"));
        self.children.push(child);
        self.children.len() - 1
    }

    /// The process id of a process started here (the recovery benchmark finds lease owners).
    #[allow(dead_code)]
    pub fn pid(&self, index: usize) -> Option<u32> {
        self.children[index].id()
    }

    /// SIGKILLs a process started by this environment and reaps it.
    pub async fn kill(&mut self, index: usize) {
        let child = &mut self.children[index];
        let _ = child.start_kill();
        let _ = child.wait().await;
    }

    /// Sends SIGTERM to a process started here and waits for it to exit.
    pub async fn terminate(&mut self, index: usize) -> std::process::ExitStatus {
        let child = &mut self.children[index];
        let pid = child.id().expect("running child") as i32;
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        child.wait().await.expect("child exits")
    }

    /// Starts the API on `api_url` and waits until it answers; the index is for `kill`.
    pub async fn start_api(&mut self) -> usize {
        let index = self.spawn("agentq-api");
        let deadline = Instant::now() + WAIT;
        loop {
            let health = self
                .http
                .get(format!("{}/healthz", self.api_url))
                .send()
                .await;
            if health.is_ok_and(|response| response.status().is_success()) {
                return index;
            }
            assert!(
                Instant::now() < deadline,
                "agentq-api did not answer /healthz within {WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts another API process on a port of its own, with `vars` set on top of the
    /// environment; returns its URL once it answers.
    pub async fn start_another_api(&mut self, vars: &[(&str, &str)]) -> (usize, String) {
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let saved = self.env.clone();
        self.set("AGENTQ_LISTEN", &format!("127.0.0.1:{port}"));
        for (var, value) in vars {
            self.set(var, value);
        }
        let index = self.spawn("agentq-api");
        self.env = saved;
        let deadline = Instant::now() + WAIT;
        loop {
            let health = self.http.get(format!("{url}/healthz")).send().await;
            if health.is_ok_and(|response| response.status().is_success()) {
                return (index, url);
            }
            assert!(
                Instant::now() < deadline,
                "the second agentq-api did not answer /healthz within {WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts a worker process; the index is for `kill`/`terminate`.
    pub fn start_worker(&mut self) -> usize {
        self.spawn("agentq-worker")
    }

    /// A new API key for `org` (created if new).
    pub async fn key(&self, org: &str) -> String {
        self.store.create_api_key(org).await.expect("create key").1
    }

    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.api_url));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("API answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Starts a session with one user message; returns its id.
    pub async fn run(&self, key: &str, question: &str, extra: Value) -> Uuid {
        let mut body = serde_json::json!({"messages": [{"role": "user", "content": question}]});
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        let (status, created) = self
            .request(
                reqwest::Method::POST,
                "/v1/agents/run",
                Some(key),
                Some(body),
            )
            .await;
        assert_eq!(status, 202, "run answered {created}");
        created["session_id"]
            .as_str()
            .and_then(|id| id.parse().ok())
            .expect("session id")
    }

    pub async fn cancel(&self, key: &str, id: Uuid) -> (u16, Value) {
        let path = format!("/v1/agents/{id}/cancel");
        self.request(reqwest::Method::POST, &path, Some(key), None)
            .await
    }

    pub async fn session(&self, key: &str, id: Uuid) -> AgentSession {
        let (status, body) = self
            .request(
                reqwest::Method::GET,
                &format!("/v1/agents/{id}"),
                Some(key),
                None,
            )
            .await;
        assert_eq!(status, 200, "get answered {body}");
        serde_json::from_value(body).expect("session JSON")
    }

    /// Polls until `done` holds for the session.
    pub async fn wait_until(
        &self,
        key: &str,
        id: Uuid,
        what: &str,
        done: impl Fn(&AgentSession) -> bool,
    ) -> AgentSession {
        let deadline = Instant::now() + WAIT;
        loop {
            let session = self.session(key, id).await;
            if done(&session) {
                return session;
            }
            assert!(
                Instant::now() < deadline,
                "session never became {what}: {session:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn wait_awaiting_approval(&self, key: &str, id: Uuid) -> AgentSession {
        self.wait_until(key, id, "awaiting approval", |s| {
            s.status == SessionStatus::AwaitingApproval
        })
        .await
    }

    pub async fn wait_finished(&self, key: &str, id: Uuid) -> AgentSession {
        self.wait_until(key, id, "finished", |s| s.status.is_terminal())
            .await
    }

    pub async fn wait_status(&self, key: &str, id: Uuid, status: SessionStatus) -> AgentSession {
        let session = self.wait_finished(key, id).await;
        assert_eq!(session.status, status, "{session:#?}");
        session
    }

    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(redis_url())
            .expect("redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("redis")
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.start_kill();
        }
        // Best effort: drop the database and the Redis keys of this test.
        if let Some(dir) = &self.data_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        let Some(database) = self.database.clone() else {
            return;
        };
        let admin_url = admin_database_url();
        let prefix = self.redis_prefix.clone();
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                if let Ok(admin) = sqlx::PgPool::connect(&admin_url).await {
                    let drop = format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)");
                    let _ = sqlx::query(sqlx::AssertSqlSafe(drop)).execute(&admin).await;
                }
                if let Ok(client) = redis::Client::open(redis_url())
                    && let Ok(mut conn) = client.get_multiplexed_async_connection().await
                {
                    let keys: Vec<String> = redis::cmd("KEYS")
                        .arg(format!("{prefix}*"))
                        .query_async(&mut conn)
                        .await
                        .unwrap_or_default();
                    if !keys.is_empty() {
                        let _: redis::RedisResult<()> =
                            redis::cmd("DEL").arg(keys).query_async(&mut conn).await;
                    }
                }
            });
        })
        .join();
    }
}
