use std::net::SocketAddr;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "agentq",
    version,
    about = "Run LLM agents as durable background jobs"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Operator commands that talk to Postgres directly (DATABASE_URL).
    #[command(subcommand)]
    Admin(Admin),
    /// The whole system in this process on embedded storage (SQLite): the API and workers, no
    /// Postgres, no Redis. With QUESTION, also runs one session and follows it.
    Dev(Dev),
    /// Start an agent session.
    Run {
        /// The question or task for the agent.
        question: String,
        /// Model id (default: the server's AGENTQ_DEFAULT_MODEL).
        #[arg(long)]
        model: Option<String>,
        /// Comma-separated tool names (default: every tool the server offers).
        #[arg(long, value_delimiter = ',')]
        tools: Option<Vec<String>>,
        /// Most steps the agent may take (1 to 50, default 10).
        #[arg(long)]
        max_steps: Option<u32>,
        /// Most tokens the session may spend.
        #[arg(long)]
        max_tokens: Option<u64>,
        /// Most USD the session may spend, e.g. 0.25.
        #[arg(long)]
        max_cost_usd: Option<String>,
        /// `native` (tool use) or `json` (JSON ReAct protocol).
        #[arg(long)]
        react_mode: Option<String>,
        /// Seconds a held tool call waits for a human (the deployment's default when omitted).
        #[arg(long)]
        approval_timeout: Option<u64>,
        /// What happens when no one decides in time: fail (the default), reject or approve.
        #[arg(long, value_parser = ["fail", "reject", "approve"])]
        on_approval_timeout: Option<String>,
        /// When the org already has as many sessions active as its cap allows: queue (the
        /// default: the session waits `queued`) or reject (refused with concurrency_limited).
        #[arg(long, value_parser = ["queue", "reject"])]
        if_busy: Option<String>,
        /// An http(s) URL that gets a signed event when the session waits for approval and when
        /// it ends (the org's default URL otherwise; see `agentq admin webhook`).
        #[arg(long)]
        webhook_url: Option<String>,
        /// Wait for the session to finish, printing each step.
        #[arg(long)]
        follow: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show a session.
    Get {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Cancel a session.
    Cancel { id: String },
    /// Approve (or reject) the tool calls a session awaits approval for; `agentq get` shows them.
    Approve {
        id: String,
        /// The step awaiting approval (`pending_approval.step`).
        #[arg(long)]
        step: u32,
        /// Reject instead of approving: the calls that need approval don't run, and the agent
        /// observes the rejection.
        #[arg(long)]
        reject: bool,
        /// Why, kept with the step and shown to the agent on a rejection.
        #[arg(long)]
        reason: Option<String>,
    },
    /// List the tools the server offers.
    Tools {
        #[arg(long)]
        json: bool,
    },
    /// Run a tool by hand with the worker's configuration (no approval step: an operator's tool).
    #[command(subcommand)]
    Tool(ToolCommand),
    /// Benchmarks: start what they need on loopback, print figures, write them as JSON.
    Bench(Bench),
    /// Serve agentq's local stand-in model (speaks the Anthropic Messages API; not Claude).
    StandInLlm {
        #[arg(long, default_value = "127.0.0.1:8089")]
        listen: SocketAddr,
    },
}

#[derive(clap::Args, Debug)]
pub struct Bench {
    /// What to measure.
    #[arg(value_enum)]
    pub what: BenchWhat,
    /// Seconds each measurement runs.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Fewer configurations and smaller counts (a smoke run).
    #[arg(long)]
    pub quick: bool,
    /// Directory for the JSON figures (default: bench-results).
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
    /// `steps` only: worker processes to measure with, instead of 1, 2 and 4 (repeatable).
    #[arg(long = "workers", value_name = "N")]
    pub workers: Vec<usize>,
    /// `steps` only: sessions in flight to measure with, instead of 20 and 200 (repeatable).
    #[arg(long = "sessions", value_name = "N")]
    pub sessions: Vec<usize>,
    /// `steps` only: `separate` (agentq-api and agentq-worker processes over Postgres and
    /// Redis) or `dev` (one `agentq dev` process on SQLite; workers are its --workers).
    #[arg(long, value_enum, default_value_t = BenchBackend::Separate)]
    pub backend: BenchBackend,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchBackend {
    Separate,
    Dev,
}

#[derive(clap::Args, Debug)]
pub struct Dev {
    /// A question to run as one session, printing its steps as they finish.
    pub question: Option<String>,
    /// Worker instances in this process.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Where sessions, keys and the queue are kept (kept across restarts).
    #[arg(long, default_value = ".agentq")]
    pub data_dir: std::path::PathBuf,
    /// Stop once QUESTION's session has ended, with `agentq run --follow`'s exit code.
    #[arg(long)]
    pub exit: bool,
    /// Comma-separated tools for QUESTION's session (default: every tool offered; `echo` with
    /// the stand-in model).
    #[arg(long, value_delimiter = ',')]
    pub tools: Option<Vec<String>>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchWhat {
    /// Create and poll: latency and throughput, closed and open loop, workers running.
    Api,
    /// Durable steps per second and the latency a step adds, 1/2/4 workers, 20/200 sessions.
    Steps,
    /// print(1) through code_run, per sandbox backend.
    Sandbox,
    /// How long a session stands still after its worker is SIGKILLed.
    Recovery,
    /// Resident size of API and worker: idle, under load, after 10,000 sessions.
    Memory,
    /// All of the above.
    All,
}

#[derive(Subcommand, Debug)]
pub enum Admin {
    /// Apply database migrations.
    Migrate,
    /// Create an API key for an org (created if new); the key is the last line printed.
    CreateKey {
        #[arg(long)]
        org: String,
        /// A name to know the key by (shown by `keys list`).
        #[arg(long)]
        name: Option<String>,
        /// The key stops working this many days from now.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        expires_in_days: Option<u32>,
    },
    /// List or revoke API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Give an org its own API rate limit, or with --default put it back on the deployment's
    /// (AGENTQ_RATE_LIMIT_PER_SEC, AGENTQ_RATE_LIMIT_BURST). API processes apply it when they
    /// next verify the org's keys, within AGENTQ_AUTH_CACHE_SECS.
    RateLimit {
        #[arg(long)]
        org: String,
        /// Requests per second.
        #[arg(long, required_unless_present = "default", conflicts_with = "default",
              value_parser = clap::value_parser!(u32).range(1..))]
        per_sec: Option<u32>,
        /// Requests allowed at once above that pace [the same as --per-sec].
        #[arg(long, conflicts_with = "default", value_parser = clap::value_parser!(u32).range(1..))]
        burst: Option<u32>,
        /// Use the deployment's default again.
        #[arg(long)]
        default: bool,
    },
    /// Give an org its own cap on active sessions (pending, running or awaiting approval), no
    /// cap with --unlimited, or with --default the deployment's (AGENTQ_ORG_MAX_ACTIVE_SESSIONS).
    /// Past it new sessions wait `queued`. API processes apply it when they next verify the
    /// org's keys, within AGENTQ_AUTH_CACHE_SECS.
    Concurrency {
        #[arg(long)]
        org: String,
        /// Sessions the org may have active at once.
        #[arg(long, required_unless_present_any = ["unlimited", "default"],
              conflicts_with_all = ["unlimited", "default"],
              value_parser = clap::value_parser!(u32).range(1..))]
        max_active: Option<u32>,
        /// No cap for this org.
        #[arg(long, conflicts_with = "default")]
        unlimited: bool,
        /// Use the deployment's default again.
        #[arg(long)]
        default: bool,
    },
    /// Show an org's webhook settings, set or clear its default webhook URL, or rotate its
    /// signing secret. The secret (made when first needed) is the last line printed: receivers
    /// verify every message with it (Standard Webhooks).
    Webhook {
        #[arg(long)]
        org: String,
        /// Send the events of the org's sessions here when their run names no webhook_url.
        /// Checked like a run's (AGENTQ_WEB_FETCH_ALLOW opens a private address).
        #[arg(long, conflicts_with = "clear")]
        url: Option<String>,
        /// Remove the org's default URL.
        #[arg(long)]
        clear: bool,
        /// Replace the signing secret; messages not yet delivered are signed with the new one.
        #[arg(long)]
        rotate_secret: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// An org's keys, oldest first: id, name, prefix, created, last used, expiry, revocation.
    List {
        #[arg(long)]
        org: String,
        /// One JSON object per key instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key: every API process refuses it within AGENTQ_AUTH_CACHE_SECS (5 s by default).
    Revoke {
        /// The key's id (from `keys list` or `create-key`).
        key_id: uuid::Uuid,
    },
}

#[derive(Subcommand, Debug)]
pub enum ToolCommand {
    /// Run one tool call and print its ToolResult as JSON; exit code 1 when it failed.
    Run {
        /// Tool name, e.g. web_fetch.
        name: String,
        /// The arguments, as a JSON object.
        #[arg(long)]
        args: String,
    },
}
