//! A whole agentq on loopback for one benchmark: a fresh database on the Postgres at
//! `DATABASE_URL`, a Redis key prefix of its own on `REDIS_URL`, the stand-in model in this
//! process (no delay, no call records), and the real `agentq-api` and `agentq-worker` binaries
//! as child processes, killed when the stack is dropped.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use agentq_shared::store::{Store, Summary};
use anyhow::{Context as _, bail};
use tokio::process::{Child, Command};
use uuid::Uuid;

use crate::stand_in::FakeLlm;

pub struct Stack {
    pub llm: FakeLlm,
    pub api_url: String,
    pub key: String,
    pub http: reqwest::Client,
    store: Store,
    admin_url: String,
    database: String,
    redis_url: String,
    pub prefix: String,
    env: Vec<(String, String)>,
    api: Option<Child>,
    workers: Vec<Child>,
    /// `agentq dev`'s data directory, when the stack is one `agentq dev` process.
    dev: Option<PathBuf>,
}

fn admin_url() -> String {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn redis_url() -> String {
    std::env::var("REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into())
}

/// A binary next to this one (`cargo build --release --workspace --bins` builds them all).
fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::current_exe()?.with_file_name(name);
    if !path.exists() {
        bail!(
            "{} is missing: build the binaries with `cargo build --release --workspace --bins` \
             (deploy/bench.sh does)",
            path.display()
        );
    }
    Ok(path)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The load generator's HTTP client: many connections kept open.
fn http_client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .timeout(Duration::from_secs(30))
        .build()
}

/// `own` after the tuning in the benchmark's own environment (AGENTQ_WORKER_CONCURRENCY,
/// AGENTQ_PG_POOL, ...), which reaches the processes it starts; what the stack sets wins.
fn with_tuning<const N: usize>(own: [(&str, String); N]) -> Vec<(String, String)> {
    let tuning: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("AGENTQ_") && !own.iter().any(|(o, _)| o == k))
        .collect();
    tuning
        .into_iter()
        .chain(own.into_iter().map(|(k, v)| (k.to_owned(), v)))
        .collect()
}

/// The API's per-org rate limit for benchmarks: off (they load one org far past any sane
/// limit), unless `AGENTQ_RATE_LIMIT_PER_SEC` is set to measure with one.
fn rate_limit() -> String {
    std::env::var("AGENTQ_RATE_LIMIT_PER_SEC").unwrap_or_else(|_| "0".into())
}

/// The per-org cap on active sessions for benchmarks: off (they keep thousands of one org's
/// sessions in flight), unless `AGENTQ_ORG_MAX_ACTIVE_SESSIONS` is set to measure with one.
fn active_cap() -> String {
    std::env::var("AGENTQ_ORG_MAX_ACTIVE_SESSIONS").unwrap_or_else(|_| "0".into())
}

impl Stack {
    /// The database, the prefix and the stand-in model; no process yet.
    pub async fn new(label: &str) -> anyhow::Result<Self> {
        let admin_url = admin_url();
        let database = format!("agentq_bench_{label}_{}", Uuid::new_v4().simple());
        let admin = Store::connect_durable(&admin_url).await?;
        admin
            .create_database(&database)
            .await
            .with_context(|| format!("creating database {database}"))?;
        let mut url = url::Url::parse(&admin_url).context("DATABASE_URL is not a URL")?;
        url.set_path(&database);
        let database_url = url.to_string();
        let store = Store::connect_durable(&database_url).await?;
        store.migrate().await?;
        let (_, key) = store.create_api_key("bench").await?;

        let llm = FakeLlm::unrecorded();
        let llm_addr = llm.spawn().await?;
        let prefix = format!("agentq-bench-{}", Uuid::new_v4().simple());
        let port = free_port()?;
        let api_url = format!("http://127.0.0.1:{port}");
        let redis_url = redis_url();
        let env = [
            ("DATABASE_URL", database_url.as_str()),
            ("REDIS_URL", redis_url.as_str()),
            ("AGENTQ_REDIS_PREFIX", prefix.as_str()),
            ("AGENTQ_LISTEN", &format!("127.0.0.1:{port}")),
            ("ANTHROPIC_API_KEY", "bench"),
            ("ANTHROPIC_BASE_URL", &format!("http://{llm_addr}")),
            ("AGENTQ_TEST_TOOLS", "true"),
            ("AGENTQ_SANDBOX", "off"),
            ("AGENTQ_LLM_ATTEMPTS", "1"),
            ("AGENTQ_RATE_LIMIT_PER_SEC", &rate_limit()),
            ("AGENTQ_ORG_MAX_ACTIVE_SESSIONS", &active_cap()),
            ("RUST_LOG", "warn"),
        ];
        let env = with_tuning(env.map(|(k, v)| (k, v.to_owned())));
        Ok(Self {
            llm,
            api_url,
            key,
            http: http_client()?,
            store,
            admin_url,
            database,
            redis_url,
            prefix,
            env,
            api: None,
            workers: Vec::new(),
            dev: None,
        })
    }

    /// The stack as `agentq dev` runs it: one process (API and workers) on SQLite in a
    /// directory of its own, with the stand-in model in this process; no process yet.
    pub async fn new_dev(label: &str) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("agentq-bench-{label}-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir)?;
        let database_url = format!("sqlite://{}", dir.join("agentq.db").display());
        let store = Store::connect_durable(&database_url).await?;
        let (_, key) = store.create_api_key("bench").await?;
        let llm = FakeLlm::unrecorded();
        let llm_addr = llm.spawn().await?;
        let port = free_port()?;
        let env = [
            ("AGENTQ_LISTEN", format!("127.0.0.1:{port}")),
            ("ANTHROPIC_API_KEY", "bench".into()),
            ("ANTHROPIC_BASE_URL", format!("http://{llm_addr}")),
            ("AGENTQ_TEST_TOOLS", "true".into()),
            ("AGENTQ_SANDBOX", "off".into()),
            ("AGENTQ_LLM_ATTEMPTS", "1".into()),
            ("AGENTQ_RATE_LIMIT_PER_SEC", rate_limit()),
            ("AGENTQ_ORG_MAX_ACTIVE_SESSIONS", active_cap()),
            ("RUST_LOG", "warn".into()),
        ];
        let env = with_tuning(env);
        Ok(Self {
            llm,
            api_url: format!("http://127.0.0.1:{port}"),
            key,
            http: http_client()?,
            store,
            admin_url: String::new(),
            database: String::new(),
            redis_url: String::new(),
            prefix: String::new(),
            env,
            api: None,
            workers: Vec::new(),
            dev: Some(dir),
        })
    }

    /// Whether this is the `agentq dev` stack (no Postgres, no Redis to count).
    pub fn is_dev(&self) -> bool {
        self.dev.is_some()
    }

    fn spawn(&self, name: &str) -> anyhow::Result<Child> {
        let mut command = Command::new(binary(name)?);
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        command.spawn().with_context(|| format!("starting {name}"))
    }

    /// Starts the API and waits until it answers.
    pub async fn start_api(&mut self) -> anyhow::Result<()> {
        if self.is_dev() {
            // `agentq dev` serves the API with its workers (`start_workers`).
            return Ok(());
        }
        self.api = Some(self.spawn("agentq-api")?);
        self.wait_healthy().await
    }

    async fn wait_healthy(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let health = self
                .http
                .get(format!("{}/healthz", self.api_url))
                .send()
                .await;
            if health.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the API did not answer /healthz within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts `n` more workers.
    pub async fn start_workers(&mut self, n: usize) -> anyhow::Result<()> {
        if let Some(dir) = &self.dev {
            // One `agentq dev` process with n workers.
            let mut command = Command::new(binary("agentq")?);
            command
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .args(["dev", "--workers", &n.to_string(), "--data-dir"])
                .arg(dir)
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .kill_on_drop(true);
            self.workers
                .push(command.spawn().context("starting agentq dev")?);
            return self.wait_healthy().await;
        }
        for _ in 0..n {
            let worker = self.spawn("agentq-worker")?;
            self.workers.push(worker);
        }
        Ok(())
    }

    /// Stops every worker (SIGKILL) and waits for them.
    pub async fn stop_workers(&mut self) {
        for mut worker in self.workers.drain(..) {
            let _ = worker.kill().await;
        }
    }

    pub fn api_pid(&self) -> Option<u32> {
        self.api.as_ref().and_then(Child::id)
    }

    pub fn worker_pids(&self) -> Vec<u32> {
        self.workers.iter().filter_map(Child::id).collect()
    }

    /// SIGKILLs the worker with this pid and starts another in its place.
    pub async fn replace_worker(&mut self, pid: u32) -> anyhow::Result<()> {
        if let Some(at) = self.workers.iter().position(|w| w.id() == Some(pid)) {
            let mut worker = self.workers.remove(at);
            let _ = worker.kill().await;
        }
        self.start_workers(1).await
    }

    pub async fn summary(&self) -> anyhow::Result<Summary> {
        Ok(self.store.summary().await?)
    }

    /// Sessions not yet finished: cheap enough to poll while measuring, unlike `summary`.
    pub async fn unfinished(&self) -> anyhow::Result<u64> {
        Ok(self.store.unfinished().await?)
    }

    pub async fn lease_holder(&self, id: Uuid) -> anyhow::Result<Option<String>> {
        Ok(self.store.lease_holder(id).await?)
    }

    /// Postgres transactions committed in the bench database so far.
    pub async fn transactions(&self) -> anyhow::Result<u64> {
        if self.is_dev() {
            return Ok(0);
        }
        Ok(self.store.transactions_committed().await?)
    }

    /// Redis commands served so far (all clients).
    pub async fn redis_commands(&self) -> anyhow::Result<u64> {
        if self.is_dev() {
            return Ok(0);
        }
        let client = redis::Client::open(self.redis_url.as_str())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let info: String = redis::cmd("INFO")
            .arg("stats")
            .query_async(&mut conn)
            .await?;
        info.lines()
            .find_map(|l| l.strip_prefix("total_commands_processed:"))
            .and_then(|n| n.trim().parse().ok())
            .context("Redis INFO has no total_commands_processed")
    }
}

/// Resident memory of a process, in MB.
pub fn resident_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

impl Drop for Stack {
    fn drop(&mut self) {
        for child in self.workers.iter_mut().chain(self.api.as_mut()) {
            let _ = child.start_kill();
        }
        if let Some(dir) = &self.dev {
            let _ = std::fs::remove_dir_all(dir);
            return;
        }
        let (admin, database, redis_url, prefix) = (
            self.admin_url.clone(),
            self.database.clone(),
            self.redis_url.clone(),
            self.prefix.clone(),
        );
        // Best effort, on a runtime of its own: the database and the Redis keys of this run.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if let Ok(store) = Store::connect_durable(&admin).await {
                    let _ = store.drop_database(&database).await;
                }
                if let Ok(client) = redis::Client::open(redis_url.as_str())
                    && let Ok(mut conn) = client.get_multiplexed_async_connection().await
                {
                    let keys: Vec<String> = redis::cmd("KEYS")
                        .arg(format!("{prefix}*"))
                        .query_async(&mut conn)
                        .await
                        .unwrap_or_default();
                    for chunk in keys.chunks(500) {
                        let _: redis::RedisResult<()> =
                            redis::cmd("DEL").arg(chunk).query_async(&mut conn).await;
                    }
                }
            });
        })
        .join();
    }
}
