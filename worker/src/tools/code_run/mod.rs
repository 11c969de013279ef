//! `code_run`: runs an agent's Python 3.11 or Node.js 20 program in a sandbox and returns
//! `{stdout, stderr, exit_code, timed_out, oom_killed, truncated, duration_ms}`.
//!
//! - `limits.rs`: what a run may use (data, defaults in `agentq_shared::config::SandboxLimits`),
//!   the syscalls both backends refuse, and the output cap.
//! - `program.rs`: how the code reaches the interpreter (on stdin, framed ahead of the program's
//!   own stdin), shared by both backends.
//! - `docker.rs` + `pool.rs`: one fresh hardened container per run, from a pool of pre-created,
//!   never-started containers.
//! - `process.rs`: bubblewrap namespaces + rlimits + seccomp, for hosts without Docker.
//!
//! Whatever the backend, dropping the `call` future (session cancelled, deadline, lease lost)
//! kills and removes the run: each backend holds a guard whose `Drop` does it.

mod container;
mod docker;
pub mod limits;
mod pool;
mod process;
mod program;
mod seccomp;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use agentq_shared::config::{CodeRunSettings, SandboxMode, ToolSettings};
use agentq_shared::tools::{Tool, ToolContext, ToolDefinition, ToolError};
use serde::{Deserialize, Serialize};

pub use agentq_shared::tools::code_run::NAME;
pub use docker::DockerBackend;
pub use process::ProcessBackend;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    Python,
    Javascript,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Request {
    pub language: Language,
    pub code: String,
    #[serde(default)]
    pub stdin: String,
}

/// What the agent observes.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RunOutput {
    pub stdout: String,
    pub stderr: String,
    /// `None` when the program was killed before it reported one.
    pub exit_code: Option<i64>,
    pub timed_out: bool,
    pub oom_killed: bool,
    /// stdout or stderr was cut at the limit.
    pub truncated: bool,
    pub duration_ms: u64,
}

/// Where code runs.
#[derive(Clone)]
pub enum Backend {
    Docker(Arc<DockerBackend>),
    Process(Arc<ProcessBackend>),
}

impl Backend {
    /// Picks the backend for `AGENTQ_SANDBOX` and logs the choice. `docker` without an answering
    /// engine is an error (the worker does not start); `auto` falls back to the process backend.
    pub fn choose(settings: &CodeRunSettings) -> anyhow::Result<Self> {
        Self::choose_at(settings, &container::socket_path())
    }

    /// `choose` with the engine's socket given.
    pub fn choose_at(settings: &CodeRunSettings, socket: &str) -> anyhow::Result<Self> {
        let docker = || DockerBackend::connect(settings, socket);
        let process = || Self::Process(Arc::new(ProcessBackend::new(settings)));
        let backend = match settings.mode {
            SandboxMode::Docker => Self::Docker(Arc::new(docker()?)),
            SandboxMode::Process => {
                anyhow::ensure!(
                    process::bwrap_available(),
                    "AGENTQ_SANDBOX=process needs bubblewrap (apt-get install bubblewrap)"
                );
                process()
            }
            SandboxMode::Auto | SandboxMode::Off => match docker() {
                Ok(docker) => Self::Docker(Arc::new(docker)),
                Err(err) => {
                    if !process::bwrap_available() {
                        tracing::error!(
                            "code_run: neither Docker nor bubblewrap; every run will fail"
                        );
                    }
                    tracing::warn!(error = %err, "code_run: no Docker engine, using the process sandbox");
                    process()
                }
            },
        };
        tracing::info!(backend = backend.name(), "code_run sandbox backend chosen");
        Ok(backend)
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Docker(_) => "docker",
            Self::Process(_) => "process",
        }
    }

    pub async fn run(&self, request: &Request) -> Result<RunOutput, ToolError> {
        match self {
            Self::Docker(docker) => docker.run(request).await,
            Self::Process(process) => process.run(request).await,
        }
    }

    /// Waits for clean-up still running in the background (Docker removes containers after the
    /// run has answered).
    pub async fn settle(&self) {
        if let Self::Docker(docker) = self {
            docker.settle().await;
        }
    }
}

pub struct CodeRun {
    definition: ToolDefinition,
    backend: Backend,
}

impl CodeRun {
    pub fn new(tools: &ToolSettings) -> anyhow::Result<Self> {
        Ok(Self::with_backend(tools, Backend::choose(&tools.code_run)?))
    }

    pub fn with_backend(tools: &ToolSettings, backend: Backend) -> Self {
        let mut tools = tools.clone();
        if tools.code_run.mode == SandboxMode::Off {
            tools.code_run.mode = SandboxMode::Auto;
        }
        let definition = agentq_shared::tools::code_run::definition(&tools);
        Self {
            // `Off` is turned into `Auto` above, so the definition is always there.
            definition: definition.unwrap_or_else(|| unreachable!("code_run is offered")),
            backend,
        }
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }
}

#[async_trait::async_trait]
impl Tool for CodeRun {
    fn definition(&self) -> ToolDefinition {
        self.definition.clone()
    }

    async fn call(
        &self,
        args: serde_json::Value,
        _ctx: &ToolContext,
    ) -> Result<serde_json::Value, ToolError> {
        let request: Request = serde_json::from_value(args)
            .map_err(|e| ToolError(format!("invalid arguments: {e}")))?;
        let output = self.backend.run(&request).await?;
        serde_json::to_value(output).map_err(|e| ToolError(format!("unreadable result: {e}")))
    }

    async fn settle(&self) {
        self.backend.settle().await;
    }
}
