//! The Docker backend: one fresh, hardened, never-reused container per run (create or take
//! from the pool, attach, start, code on stdin, capped read up to the program's end line or the
//! engine's exit, remove in the background). The container's shape is in container.rs; every
//! limit comes from `SandboxLimits` (limits.rs); the end line is program.rs's.

use std::time::{Duration, Instant};

use agentq_shared::config::CodeRunSettings;
use agentq_shared::tools::ToolError;
use bollard::Docker;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    AttachContainerOptions, InspectContainerOptions, KillContainerOptions, StartContainerOptions,
    WaitContainerOptions,
};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use super::limits::{Capped, LABEL};
use super::pool::{Pool, remove_later};
use super::program::{EndMarker, EndWatch};
use super::{Language, Request, RunOutput, program};
use tokio_util::task::TaskTracker;

pub struct DockerBackend {
    pub(super) docker: Docker,
    pub(super) settings: CodeRunSettings,
    pub(super) pool: Pool,
    /// Label value of this backend's containers, so tests (and operators) can find them.
    pub instance: String,
}

impl DockerBackend {
    /// Connects to the engine at `DOCKER_HOST` (a `unix://` socket) or the default socket. Fails
    /// when no engine answers. Leftover containers are removed in the background when a Tokio
    /// runtime is running (a worker's start).
    pub fn new(settings: &CodeRunSettings) -> anyhow::Result<Self> {
        Self::connect(settings, &super::container::socket_path())
    }

    /// `new` with the engine's socket given.
    pub fn connect(settings: &CodeRunSettings, socket: &str) -> anyhow::Result<Self> {
        let (major, minor) = super::container::ping(socket)
            .map_err(|e| anyhow::anyhow!("no Docker engine answers on {socket}: {e}"))?;
        let version = bollard::ClientVersion {
            major_version: major,
            minor_version: minor.min(bollard::API_DEFAULT_VERSION.minor_version),
        };
        let docker = Docker::connect_with_unix(socket, 120, &version)?;
        let backend = Self {
            pool: Pool::new(docker.clone(), settings.pool_size, socket, version),
            docker,
            settings: settings.clone(),
            instance: uuid::Uuid::new_v4().simple().to_string(),
        };
        // The pool fills once runs start coming (a one-off `agentq tool run` or a test that
        // builds a registry should not pay for containers it never uses).
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let docker = backend.docker.clone();
            let grace = settings.limits.timeout + Duration::from_secs(30);
            runtime.spawn(async move {
                super::pool::remove_leftovers(&docker, LABEL, grace).await;
            });
        }
        Ok(backend)
    }

    fn guard(&self, id: String) -> ContainerGuard {
        ContainerGuard(Some((self.docker.clone(), id)), self.pool.tasks.clone())
    }

    /// Waits (up to 10 s) for the removals and refills this backend started in the background.
    pub async fn settle(&self) {
        self.pool.settle(Duration::from_secs(10)).await;
    }

    /// Pre-created containers ready for `language`.
    pub fn pool_ready(&self, language: Language) -> usize {
        self.pool.ready(language)
    }

    /// The hardened container for one run of `language` (container.rs).
    pub(super) fn container_body(&self, language: Language) -> ContainerCreateBody {
        super::container::hardened(&self.settings, language, &self.instance)
    }

    pub async fn run(&self, request: &Request) -> Result<RunOutput, ToolError> {
        let started = Instant::now();
        let pooled = self.pool.take(request.language);
        let id = match pooled {
            Some(id) => id,
            None => self.create(request.language).await?,
        };
        // From here on the container is removed however this future ends (Drop included).
        let mut guard = self.guard(id.clone());
        let attached = match self.attach_and_start(&id).await {
            Ok(attached) => attached,
            Err(_) => {
                // A pooled container may have been removed by another worker's cleanup.
                let id = self.create(request.language).await?;
                guard = self.guard(id.clone());
                self.attach_and_start(&id).await.map_err(engine_error)?
            }
        };
        let id = guard.id().to_owned();
        let mut output = self.collect(&id, attached, request, started).await;
        output.duration_ms = started.elapsed().as_millis() as u64;
        drop(guard);
        self.pool
            .refill(request.language, &self.container_body(request.language));
        Ok(output)
    }

    pub(super) async fn create(&self, language: Language) -> Result<String, ToolError> {
        let body = self.container_body(language);
        let image = body.image.clone().unwrap_or_default();
        match self.docker.create_container(None, body).await {
            Ok(created) => Ok(created.id),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Err(ToolError(format!(
                "the sandbox image {image} is not on this Docker host \
                 (deploy/sandbox/build-images.sh builds one offline)"
            ))),
            Err(e) => Err(engine_error(e)),
        }
    }

    async fn attach_and_start(
        &self,
        id: &str,
    ) -> Result<bollard::container::AttachContainerResults, bollard::errors::Error> {
        let options = AttachContainerOptions {
            stream: true,
            stdin: true,
            stdout: true,
            stderr: true,
            ..Default::default()
        };
        let attached = self.docker.attach_container(id, Some(options)).await?;
        self.docker
            .start_container(id, None::<StartContainerOptions>)
            .await?;
        Ok(attached)
    }

    async fn collect(
        &self,
        id: &str,
        attached: bollard::container::AttachContainerResults,
        request: &Request,
        started: Instant,
    ) -> RunOutput {
        let limits = &self.settings.limits;
        // Asked for now, answered at the exit: saves a round trip after the output ends.
        let patience = limits.timeout + Duration::from_secs(10);
        let exit = tokio::spawn(exit_code(self.docker.clone(), id.to_owned(), patience));
        let mut input = attached.input;
        let end = EndMarker::random();
        let frame = program::frame(request, Some(&end));
        // Written on its own task so a program that doesn't read its stdin can't block output.
        let writer = tokio::spawn(async move {
            let _ = input.write_all(&frame).await;
            let _ = input.shutdown().await;
        });
        let (mut stdout, mut stderr) = (
            Capped::new(limits.output_bytes),
            Capped::new(limits.output_bytes),
        );
        let (mut out_end, mut err_end) = (EndWatch::new(&end), EndWatch::new(&end));
        let mut stream = attached.output;
        let deadline = tokio::time::Instant::from_std(started + limits.timeout);
        let mut timed_out = false;
        let mut flooded = false;
        loop {
            match tokio::time::timeout_at(deadline, stream.next()).await {
                Err(_) => {
                    timed_out = true;
                    break;
                }
                Ok(None) | Ok(Some(Err(_))) => break,
                Ok(Some(Ok(chunk))) => {
                    use bollard::container::LogOutput;
                    match chunk {
                        LogOutput::StdOut { message } => out_end.feed(&message, &mut stdout),
                        LogOutput::StdErr { message } => err_end.feed(&message, &mut stderr),
                        _ => {}
                    }
                    if out_end.ended() && err_end.ended() {
                        // The program is done; the engine's teardown goes on without us.
                        break;
                    }
                    if stdout.flooding() || stderr.flooding() {
                        flooded = true;
                        break;
                    }
                }
            }
        }
        // Whatever ended the read, bytes held back as a possible marker are output.
        out_end.finish(&mut stdout);
        err_end.finish(&mut stderr);
        writer.abort();
        if timed_out || flooded {
            // Keep draining while the kill goes through (an undrained attach can stall it).
            let drain = tokio::spawn(async move { while stream.next().await.is_some() {} });
            let kill = KillContainerOptions {
                signal: "SIGKILL".into(),
            };
            let _ = self.docker.kill_container(id, Some(kill)).await;
            let _ = tokio::time::timeout(Duration::from_secs(5), drain).await;
        }
        let ended = out_end.ended() && err_end.ended();
        let exit_code = if ended {
            exit.abort();
            out_end.exit_code()
        } else {
            exit.await.ok().flatten()
        };
        let oom_killed =
            exit_code == Some(137) && !ended && !timed_out && !flooded && self.oom_killed(id).await;
        RunOutput {
            truncated: stdout.truncated() || stderr.truncated(),
            stdout: stdout.text(),
            stderr: stderr.text(),
            exit_code,
            timed_out,
            oom_killed,
            duration_ms: 0,
        }
    }

    async fn oom_killed(&self, id: &str) -> bool {
        let inspected = self
            .docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await;
        inspected
            .ok()
            .and_then(|c| c.state)
            .and_then(|s| s.oom_killed)
            .unwrap_or(false)
    }
}

/// The container's exit code once it stops (wait condition `not-running`).
async fn exit_code(docker: Docker, id: String, patience: Duration) -> Option<i64> {
    let mut wait = docker.wait_container(&id, None::<WaitContainerOptions>);
    let waited = tokio::time::timeout(patience, wait.next()).await;
    match waited {
        Ok(Some(Ok(response))) => Some(response.status_code),
        // bollard reports a non-zero exit as an error carrying the code (FIELD_NOTES).
        Ok(Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. }))) => Some(code),
        _ => None,
    }
}

fn engine_error(e: bollard::errors::Error) -> ToolError {
    tracing::warn!(error = %e, "code_run: Docker engine error");
    ToolError("the sandbox failed to start the program (Docker engine error)".into())
}

/// Removes (with a kill) its container when dropped, on the Tokio runtime.
struct ContainerGuard(Option<(Docker, String)>, TaskTracker);

impl ContainerGuard {
    fn id(&self) -> &str {
        self.0
            .as_ref()
            .map(|(_, id)| id.as_str())
            .unwrap_or_default()
    }
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        if let Some((docker, id)) = self.0.take() {
            remove_later(&self.1, docker, id);
        }
    }
}

impl Drop for DockerBackend {
    fn drop(&mut self) {
        self.pool.drain();
    }
}
