//! Configuration from the environment. A missing or malformed value stops the process with a
//! message naming the variable and the form it expects; every optional knob has a default that
//! works on a developer machine (see `.env.example`).

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{var} is not set; expected {expected}")]
    Missing {
        var: &'static str,
        expected: &'static str,
    },
    #[error("{var}={value:?} is malformed; expected {expected}")]
    Malformed {
        var: &'static str,
        value: String,
        expected: &'static str,
    },
}

/// Reads variables through a lookup function so tests don't touch the process environment.
pub struct Env<F>(F);

impl Env<fn(&str) -> Option<String>> {
    pub fn process() -> Self {
        Env(|name| std::env::var(name).ok())
    }
}

impl Env<Box<dyn Fn(&str) -> Option<String> + Send + Sync>> {
    /// Variables from a list, for tests and for processes configured in code.
    pub fn from_pairs<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)]) -> Self {
        let map: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.as_ref().to_owned(), v.as_ref().to_owned()))
            .collect();
        Env(Box::new(move |k| map.get(k).cloned()))
    }
}

impl<F: Fn(&str) -> Option<String>> Env<F> {
    pub fn from_fn(f: F) -> Self {
        Env(f)
    }

    pub(crate) fn raw(&self, var: &str) -> Option<String> {
        (self.0)(var).filter(|v| !v.trim().is_empty())
    }

    pub(crate) fn required(
        &self,
        var: &'static str,
        expected: &'static str,
    ) -> Result<String, ConfigError> {
        self.raw(var).ok_or(ConfigError::Missing { var, expected })
    }

    pub(crate) fn parsed<T: FromStr>(
        &self,
        var: &'static str,
        default: T,
        expected: &'static str,
    ) -> Result<T, ConfigError> {
        match self.raw(var) {
            None => Ok(default),
            Some(value) => value.trim().parse().map_err(|_| ConfigError::Malformed {
                var,
                value,
                expected,
            }),
        }
    }

    pub(crate) fn url(
        &self,
        var: &'static str,
        value: String,
        schemes: &[&str],
        expected: &'static str,
    ) -> Result<String, ConfigError> {
        match url::Url::parse(&value) {
            Ok(url) if schemes.contains(&url.scheme()) => Ok(value),
            _ => Err(ConfigError::Malformed {
                var,
                value,
                expected,
            }),
        }
    }

    pub(crate) fn millis(
        &self,
        var: &'static str,
        default_ms: u64,
    ) -> Result<Duration, ConfigError> {
        self.parsed(var, default_ms, "a whole number of milliseconds")
            .map(Duration::from_millis)
    }

    pub(crate) fn secs(&self, var: &'static str, default_s: u64) -> Result<Duration, ConfigError> {
        self.parsed(var, default_s, "a whole number of seconds")
            .map(Duration::from_secs)
    }
}

/// What every process that touches state needs.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub database_url: String,
    pub redis_url: String,
    /// Prefix of every Redis key (snapshots, flags, the queue), so deployments can share a Redis.
    pub redis_prefix: String,
    pub snapshot_ttl: Duration,
    /// Postgres connections per process (`AGENTQ_PG_POOL`): a few per core serve best; many
    /// active connections slow Postgres down on a small machine.
    pub pg_pool_size: u32,
    /// Where polls and cancel checks are served from (`AGENTQ_HOT_COPY`).
    pub hot_copy: HotCopyMode,
    /// How long a verified API key is remembered (`AGENTQ_AUTH_CACHE_SECS`; 0 turns it off).
    pub auth_cache_ttl: Duration,
}

/// The hot copy of sessions: Redis, or none (every poll reads Postgres).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HotCopyMode {
    Redis,
    None,
}

impl StoreConfig {
    pub fn from_env<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        const DATABASE: &str = "a Postgres URL such as postgres://postgres@127.0.0.1:5432/agentq, \
             or sqlite://PATH for the embedded store";
        let database_url = env.required("DATABASE_URL", DATABASE)?;
        let database_url = env.url(
            "DATABASE_URL",
            database_url,
            &["postgres", "postgresql", "sqlite"],
            DATABASE,
        )?;
        let redis_url = env.required("REDIS_URL", "a Redis URL such as redis://127.0.0.1:6379")?;
        let redis_url = env.url(
            "REDIS_URL",
            redis_url,
            &["redis", "rediss", "unix", "redis+unix"],
            "a Redis URL such as redis://127.0.0.1:6379",
        )?;
        let redis_prefix = env
            .raw("AGENTQ_REDIS_PREFIX")
            .unwrap_or_else(|| "agentq".into());
        let hot_copy = match env.raw("AGENTQ_HOT_COPY").as_deref().map(str::trim) {
            None | Some("redis") => HotCopyMode::Redis,
            Some("none") => HotCopyMode::None,
            Some(other) => {
                return Err(ConfigError::Malformed {
                    var: "AGENTQ_HOT_COPY",
                    value: other.to_owned(),
                    expected: "redis or none",
                });
            }
        };
        Ok(Self {
            database_url,
            redis_url,
            redis_prefix,
            snapshot_ttl: env.secs("AGENTQ_SNAPSHOT_TTL_SECS", 3600)?,
            pg_pool_size: env.parsed("AGENTQ_PG_POOL", 8, "a number of connections")?,
            hot_copy,
            auth_cache_ttl: env.secs("AGENTQ_AUTH_CACHE_SECS", 5)?,
        })
    }
}

mod code_run;
mod sql_query;
mod webhooks;

pub use code_run::{CodeRunSettings, SandboxLimits, SandboxMode};
pub use sql_query::SqlQuerySettings;
pub use webhooks::WebhookSettings;

/// Which tools this deployment offers, and their limits.
#[derive(Debug, Clone, Default)]
pub struct ToolSettings {
    /// Turns on the test-only `echo` tools (`AGENTQ_TEST_TOOLS=true`).
    pub test_tools: bool,
    pub web_fetch: WebFetchSettings,
    pub code_run: CodeRunSettings,
    pub sql_query: SqlQuerySettings,
}

impl ToolSettings {
    pub fn from_env<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        Ok(Self {
            test_tools: env.parsed("AGENTQ_TEST_TOOLS", false, "true or false")?,
            web_fetch: WebFetchSettings::from_env(env)?,
            code_run: CodeRunSettings::from_env(env)?,
            sql_query: SqlQuerySettings::from_env(env)?,
        })
    }
}

/// Limits of `web_fetch`. Entries of `allow`/`deny` are CIDRs (`10.0.0.0/8`, `::1/128`), single
/// addresses, or host names (`intranet.example`, `*.corp.example`); the tool parses them.
#[derive(Debug, Clone, PartialEq)]
pub struct WebFetchSettings {
    pub timeout: Duration,
    /// Body bytes kept, counted after decompression; reading stops there.
    pub max_body_bytes: usize,
    pub max_redirects: usize,
    /// `AGENTQ_WEB_FETCH_ALLOW`: private targets opened on purpose.
    pub allow: Vec<String>,
    /// `AGENTQ_WEB_FETCH_DENY`: more targets closed.
    pub deny: Vec<String>,
}

impl Default for WebFetchSettings {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            max_body_bytes: 50 * 1024,
            max_redirects: 5,
            allow: Vec::new(),
            deny: Vec::new(),
        }
    }
}

impl WebFetchSettings {
    pub fn from_env<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let list = |var| {
            env.raw(var)
                .map(|v| {
                    v.split(',')
                        .map(|e| e.trim().to_owned())
                        .filter(|e| !e.is_empty())
                        .collect()
                })
                .unwrap_or_default()
        };
        Ok(Self {
            timeout: env.secs("AGENTQ_WEB_FETCH_TIMEOUT_SECS", defaults.timeout.as_secs())?,
            max_body_bytes: env.parsed(
                "AGENTQ_WEB_FETCH_MAX_BYTES",
                defaults.max_body_bytes,
                "a number of bytes",
            )?,
            max_redirects: env.parsed(
                "AGENTQ_WEB_FETCH_MAX_REDIRECTS",
                defaults.max_redirects,
                "a number of redirects",
            )?,
            allow: list("AGENTQ_WEB_FETCH_ALLOW"),
            deny: list("AGENTQ_WEB_FETCH_DENY"),
        })
    }
}

#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub store: StoreConfig,
    pub tools: ToolSettings,
    pub listen: SocketAddr,
    pub default_model: String,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// How long a session may run, from creation, before it fails `deadline_exceeded`.
    pub session_deadline: Duration,
    /// ReAct mode of requests that don't choose one (`AGENTQ_REACT_MODE`).
    pub react_mode: crate::schemas::ReactMode,
    /// The operators' listener with the apalis board; off unless `AGENTQ_ADMIN_LISTEN` is set.
    pub admin: Option<AdminConfig>,
    /// Worker heartbeat and how many may be missed, read like the workers read them, so the
    /// API counts the same workers alive (queue depth, the board).
    pub heartbeat: Duration,
    pub missed_heartbeats: usize,
    /// Each org's API rate limit unless it has its own (`AGENTQ_RATE_LIMIT_PER_SEC` [100],
    /// `AGENTQ_RATE_LIMIT_BURST` [200]); `None` when `AGENTQ_RATE_LIMIT_PER_SEC=0` turns limits
    /// off (orgs' own limits too).
    pub rate_limit: Option<crate::store::RateLimit>,
    /// How many sessions each org may have active (pending, running or awaiting approval) at
    /// once unless it has its own cap (`AGENTQ_ORG_MAX_ACTIVE_SESSIONS` [100]; 0: no cap).
    pub org_max_active_sessions: crate::store::ActiveCap,
}

/// `AGENTQ_ADMIN_LISTEN` and `AGENTQ_ADMIN_TOKEN`.
#[derive(Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// The operators' credential (`Authorization: Bearer <token>`, or the page's sign-in).
    pub token: String,
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("listen", &self.listen)
            .field("token", &"<redacted>")
            .finish()
    }
}

impl AdminConfig {
    /// `None` when `AGENTQ_ADMIN_LISTEN` is unset or empty; when it is set, so must
    /// `AGENTQ_ADMIN_TOKEN` be.
    pub fn from_env<F: Fn(&str) -> Option<String>>(
        env: &Env<F>,
    ) -> Result<Option<Self>, ConfigError> {
        let listen = match env.raw("AGENTQ_ADMIN_LISTEN") {
            None => return Ok(None),
            Some(v) if v.trim().is_empty() => return Ok(None),
            Some(v) => v.trim().parse().map_err(|_| ConfigError::Malformed {
                var: "AGENTQ_ADMIN_LISTEN",
                value: v,
                expected: "an address and port such as 127.0.0.1:9090",
            })?,
        };
        let token = env
            .raw("AGENTQ_ADMIN_TOKEN")
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .ok_or(ConfigError::Missing {
                var: "AGENTQ_ADMIN_TOKEN",
                expected: "the operators' credential, required with AGENTQ_ADMIN_LISTEN \
                           (e.g. the output of `openssl rand -hex 32`)",
            })?;
        Ok(Some(Self { listen, token }))
    }
}

impl ApiConfig {
    pub fn from_env<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        let durability = Durability::from_env(env)?;
        Ok(Self {
            store: StoreConfig::from_env(env)?,
            tools: ToolSettings::from_env(env)?,
            listen: env.parsed(
                "AGENTQ_LISTEN",
                SocketAddr::from(([127, 0, 0, 1], 8080)),
                "an address and port such as 127.0.0.1:8080",
            )?,
            default_model: default_model(env),
            admin: AdminConfig::from_env(env)?,
            heartbeat: durability.heartbeat,
            missed_heartbeats: durability.missed_heartbeats,
            max_body_bytes: env.parsed("AGENTQ_MAX_BODY_BYTES", 1 << 20, "a number of bytes")?,
            session_deadline: env.secs("AGENTQ_SESSION_DEADLINE_SECS", 15 * 60)?,
            rate_limit: {
                let per_sec: u32 =
                    env.parsed("AGENTQ_RATE_LIMIT_PER_SEC", 100, "requests per second")?;
                let burst: u32 =
                    env.parsed("AGENTQ_RATE_LIMIT_BURST", 200, "a number of requests")?;
                (per_sec > 0).then_some(crate::store::RateLimit {
                    per_sec,
                    burst: burst.max(1),
                })
            },
            org_max_active_sessions: match env.parsed(
                "AGENTQ_ORG_MAX_ACTIVE_SESSIONS",
                100u32,
                "a number of sessions (0: no cap)",
            )? {
                0 => crate::store::ActiveCap::Unlimited,
                n => crate::store::ActiveCap::AtMost(n),
            },
            react_mode: match env.raw("AGENTQ_REACT_MODE").as_deref().map(str::trim) {
                None | Some("native") => crate::schemas::ReactMode::Native,
                Some("json") => crate::schemas::ReactMode::Json,
                Some(other) => {
                    return Err(ConfigError::Malformed {
                        var: "AGENTQ_REACT_MODE",
                        value: other.to_owned(),
                        expected: "native or json",
                    });
                }
            },
        })
    }
}

/// Which LLM API the workers call (`AGENTQ_LLM_PROVIDER`).
#[derive(Debug, Clone, PartialEq)]
pub enum LlmProvider {
    /// The Anthropic Messages API (`ANTHROPIC_API_KEY`, `ANTHROPIC_BASE_URL`).
    Anthropic,
    /// An OpenAI-compatible chat-completions server (Ollama, vLLM, llama.cpp).
    OpenAi(OpenAiConfig),
}

#[derive(Debug, Clone, PartialEq)]
pub struct OpenAiConfig {
    /// `OPENAI_BASE_URL`, e.g. http://127.0.0.1:11434/v1 for Ollama.
    pub base_url: String,
    /// `OPENAI_API_KEY`, sent as a bearer token when set.
    pub api_key: Option<String>,
}

#[derive(Debug, Clone)]
pub struct LlmConfig {
    pub provider: LlmProvider,
    /// Empty for providers other than Anthropic.
    pub api_key: String,
    pub base_url: String,
    pub default_model: String,
    /// `max_tokens` sent with every Messages API call.
    pub max_tokens: u32,
    pub timeout: Duration,
    /// Attempts per LLM call for transient failures (429, 5xx, 529, timeouts).
    pub attempts: u32,
    /// Longest the retries of one call may wait in total.
    pub retry_budget: Duration,
    /// Characters of one tool result shown to the model (the step keeps all of it).
    pub observation_chars: usize,
    /// First backoff; it doubles (with jitter) up to 20 s unless `retry-after` says otherwise.
    pub retry_min_delay: Duration,
}

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub store: StoreConfig,
    pub tools: ToolSettings,
    pub llm: LlmConfig,
    /// How often an idle worker asks Redis for jobs (FIELD_NOTES: the default heartbeat-only
    /// polling leaves jobs waiting ~30 s).
    pub poll_interval: Duration,
    /// Jobs fetched per poll; each runs on its own task.
    pub concurrency: usize,
    pub durability: Durability,
    /// Where the worker serves `/metrics` (`AGENTQ_METRICS_LISTEN`; off when unset).
    pub metrics_listen: Option<SocketAddr>,
    /// The webhook sender's schedule and limits.
    pub webhooks: WebhookSettings,
}

/// The timings that keep sessions moving when workers die (ARCHITECTURE.md, step protocol).
#[derive(Debug, Clone)]
pub struct Durability {
    /// A step's lease; renewed every third of it while the step runs.
    pub lease_ttl: Duration,
    /// How often the active reconciler looks for stalled sessions.
    pub reconcile_every: Duration,
    /// A session with no live lease and no change for this long is re-enqueued.
    pub stall_after: Duration,
    /// How long a tool call waits for a human before the session fails `approval_expired`.
    pub approval_ttl: Duration,
    /// How often a running step checks the cancel flag.
    pub cancel_poll: Duration,
    /// Worker heartbeat; a worker silent for `heartbeat × missed_heartbeats` has its jobs re-queued.
    pub heartbeat: Duration,
    pub missed_heartbeats: usize,
    /// On SIGTERM, how long running steps may take to finish before they are abandoned.
    pub shutdown_grace: Duration,
    /// `Idempotency-Key`s are remembered at least this long.
    pub idempotency_keep: Duration,
    /// Deliveries of one step that may take its lease before the session fails
    /// `step_retries_exhausted`: a step that fails the same way every time ends instead of
    /// repeating its work until the deadline.
    pub step_max_attempts: u32,
}

impl Durability {
    pub fn from_env<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        Ok(Self {
            lease_ttl: env.millis("AGENTQ_LEASE_TTL_MS", 6_000)?,
            reconcile_every: env.millis("AGENTQ_RECONCILE_EVERY_MS", 5_000)?,
            stall_after: env.millis("AGENTQ_STALL_AFTER_MS", 30_000)?,
            approval_ttl: env.secs("AGENTQ_APPROVAL_TTL_SECS", 24 * 3600)?,
            cancel_poll: env.millis("AGENTQ_CANCEL_POLL_MS", 200)?,
            heartbeat: env.millis("AGENTQ_HEARTBEAT_MS", 2_000)?,
            missed_heartbeats: env.parsed(
                "AGENTQ_MISSED_HEARTBEATS",
                3,
                "a number of heartbeats",
            )?,
            shutdown_grace: env.secs("AGENTQ_SHUTDOWN_GRACE_SECS", 30)?,
            idempotency_keep: env.secs("AGENTQ_IDEMPOTENCY_KEEP_SECS", 48 * 3600)?,
            step_max_attempts: env.parsed(
                "AGENTQ_STEP_MAX_ATTEMPTS",
                5,
                "a number of attempts (at least 1)",
            )?,
        })
    }
}

impl WorkerConfig {
    pub fn from_env<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        let base_url = env
            .raw("ANTHROPIC_BASE_URL")
            .unwrap_or_else(|| "https://api.anthropic.com".into());
        let base_url = env.url(
            "ANTHROPIC_BASE_URL",
            base_url,
            &["http", "https"],
            "an http(s) URL such as https://api.anthropic.com",
        )?;
        let provider = match env.raw("AGENTQ_LLM_PROVIDER").as_deref().map(str::trim) {
            None | Some("anthropic") => LlmProvider::Anthropic,
            Some("openai") => {
                let url = env.required(
                    "OPENAI_BASE_URL",
                    "the server's OpenAI-compatible base URL, e.g. http://127.0.0.1:11434/v1",
                )?;
                let url = env.url(
                    "OPENAI_BASE_URL",
                    url,
                    &["http", "https"],
                    "an http(s) URL such as http://127.0.0.1:11434/v1",
                )?;
                LlmProvider::OpenAi(OpenAiConfig {
                    base_url: url.trim_end_matches('/').to_owned(),
                    api_key: env.raw("OPENAI_API_KEY"),
                })
            }
            Some(other) => {
                return Err(ConfigError::Malformed {
                    var: "AGENTQ_LLM_PROVIDER",
                    value: other.to_owned(),
                    expected: "anthropic or openai",
                });
            }
        };
        let api_key = match provider {
            LlmProvider::Anthropic => env.required(
                "ANTHROPIC_API_KEY",
                "an Anthropic API key (deploy/demo.sh runs a local stand-in model without one)",
            )?,
            LlmProvider::OpenAi(_) => String::new(),
        };
        Ok(Self {
            store: StoreConfig::from_env(env)?,
            tools: ToolSettings::from_env(env)?,
            llm: LlmConfig {
                provider,
                api_key,
                base_url: base_url.trim_end_matches('/').to_owned(),
                default_model: default_model(env),
                max_tokens: env.parsed("AGENTQ_LLM_MAX_TOKENS", 4096, "a number of tokens")?,
                timeout: env.secs("AGENTQ_LLM_TIMEOUT_SECS", 120)?,
                attempts: env.parsed("AGENTQ_LLM_ATTEMPTS", 5, "a number of attempts")?,
                retry_budget: env.secs("AGENTQ_LLM_RETRY_BUDGET_SECS", 60)?,
                observation_chars: env.parsed(
                    "AGENTQ_PROMPT_OBSERVATION_CHARS",
                    20_000,
                    "a number of characters",
                )?,
                retry_min_delay: env.millis("AGENTQ_LLM_RETRY_MIN_DELAY_MS", 500)?,
            },
            poll_interval: env.millis("AGENTQ_POLL_INTERVAL_MS", 100)?,
            concurrency: env.parsed("AGENTQ_WORKER_CONCURRENCY", 8, "a number of jobs")?,
            durability: Durability::from_env(env)?,
            webhooks: WebhookSettings::from_env(env)?,
            metrics_listen: match env.raw("AGENTQ_METRICS_LISTEN") {
                None => None,
                Some(v) if v.trim().is_empty() => None,
                Some(v) => Some(v.trim().parse().map_err(|_| ConfigError::Malformed {
                    var: "AGENTQ_METRICS_LISTEN",
                    value: v,
                    expected: "an address and port such as 127.0.0.1:9091",
                })?),
            },
        })
    }
}

fn default_model<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> String {
    env.raw("AGENTQ_DEFAULT_MODEL")
        .unwrap_or_else(|| "claude-sonnet-4-5".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env<impl Fn(&str) -> Option<String>> {
        Env::from_pairs(pairs)
    }

    const BASE: [(&str, &str); 3] = [
        ("DATABASE_URL", "postgres://postgres@127.0.0.1/agentq"),
        ("REDIS_URL", "redis://127.0.0.1:6379"),
        ("ANTHROPIC_API_KEY", "sk-test"),
    ];

    #[test]
    fn defaults_work() {
        let config = WorkerConfig::from_env(&env(&BASE)).unwrap();
        assert_eq!(config.llm.base_url, "https://api.anthropic.com");
        assert_eq!(config.llm.default_model, "claude-sonnet-4-5");
        assert_eq!(config.store.redis_prefix, "agentq");
        let api = ApiConfig::from_env(&env(&BASE)).unwrap();
        assert_eq!(api.listen.to_string(), "127.0.0.1:8080");
    }

    #[test]
    fn an_openai_compatible_provider_needs_its_url_not_an_anthropic_key() {
        let base = [
            ("DATABASE_URL", "postgres://postgres@127.0.0.1/agentq"),
            ("REDIS_URL", "redis://127.0.0.1:6379"),
            ("AGENTQ_LLM_PROVIDER", "openai"),
        ];
        let missing = WorkerConfig::from_env(&env(&base)).unwrap_err().to_string();
        assert!(
            missing.starts_with("OPENAI_BASE_URL is not set"),
            "{missing}"
        );
        let mut with_url = base.to_vec();
        with_url.push(("OPENAI_BASE_URL", "http://127.0.0.1:11434/v1/"));
        let config = WorkerConfig::from_env(&env(&with_url)).unwrap();
        assert_eq!(
            config.llm.provider,
            LlmProvider::OpenAi(OpenAiConfig {
                base_url: "http://127.0.0.1:11434/v1".into(),
                api_key: None
            })
        );
        let mut wrong = base.to_vec();
        wrong[2] = ("AGENTQ_LLM_PROVIDER", "gemini");
        let wrong = WorkerConfig::from_env(&env(&wrong))
            .unwrap_err()
            .to_string();
        assert!(
            wrong.starts_with("AGENTQ_LLM_PROVIDER=\"gemini\" is malformed"),
            "{wrong}"
        );
    }

    #[test]
    fn errors_name_the_variable() {
        let missing = WorkerConfig::from_env(&env(&BASE[..2]))
            .unwrap_err()
            .to_string();
        assert!(
            missing.starts_with("ANTHROPIC_API_KEY is not set"),
            "{missing}"
        );
        let mut bad = BASE.to_vec();
        bad.push(("AGENTQ_LISTEN", "localhost"));
        let malformed = ApiConfig::from_env(&env(&bad)).unwrap_err().to_string();
        assert!(
            malformed.starts_with("AGENTQ_LISTEN=\"localhost\" is malformed"),
            "{malformed}"
        );
        let wrong_scheme = StoreConfig::from_env(&env(&[
            ("DATABASE_URL", "mysql://x"),
            ("REDIS_URL", "redis://x"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(
            wrong_scheme.starts_with("DATABASE_URL=\"mysql://x\""),
            "{wrong_scheme}"
        );
    }
}
