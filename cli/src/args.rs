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
    /// Serve agentq's local stand-in model (speaks the Anthropic Messages API; not Claude).
    StandInLlm {
        #[arg(long, default_value = "127.0.0.1:8089")]
        listen: SocketAddr,
    },
}

#[derive(Subcommand, Debug)]
pub enum Admin {
    /// Apply database migrations.
    Migrate,
    /// Create an API key for an org (created if new); the key is the last line printed.
    CreateKey {
        #[arg(long)]
        org: String,
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
