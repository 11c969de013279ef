//! The sandbox's contract, run against both backends: each scenario is one `async fn` taking a
//! `Backend`, and `both!` makes a `process_*` and a `docker_*` test of it. Docker tests skip when
//! no engine answers, unless `AGENTQ_REQUIRE_DOCKER` is set (CI), where they fail instead.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod endings;
mod escapes;
mod isolation;

use std::sync::Arc;
use std::time::{Duration, Instant};

use agentq_shared::config::{CodeRunSettings, SandboxMode};
use bollard::query_parameters::ListContainersOptions;

use super::limits::LABEL;
use super::{Backend, DockerBackend, Language, ProcessBackend, Request, RunOutput};

pub const PYTHON_IMAGE: &str = "agentq-sandbox-python:3.11";
pub const NODE_IMAGE: &str = "agentq-sandbox-node:20";

/// Limits as shipped, with a shorter timeout so the timeout tests stay quick.
pub fn settings(timeout: Duration) -> CodeRunSettings {
    let mut settings = CodeRunSettings {
        python_image: PYTHON_IMAGE.into(),
        node_image: NODE_IMAGE.into(),
        pool_size: 0,
        ..CodeRunSettings::default()
    };
    settings.limits.timeout = timeout;
    settings
}

pub fn process_backend(settings: &CodeRunSettings) -> Backend {
    Backend::Process(Arc::new(ProcessBackend::new(settings)))
}

/// The Docker backend, or `None` (test skipped) when no engine answers and Docker is optional.
pub fn docker_backend(settings: &CodeRunSettings) -> Option<Backend> {
    match DockerBackend::new(settings) {
        Ok(docker) => Some(Backend::Docker(Arc::new(docker))),
        Err(e) if std::env::var_os("AGENTQ_REQUIRE_DOCKER").is_some() => panic!(
            "AGENTQ_REQUIRE_DOCKER is set but {e}; `deploy/ensure-services.sh --docker` starts \
             an engine and builds the sandbox images"
        ),
        Err(e) => {
            eprintln!("skipped: {e} (deploy/ensure-services.sh --docker starts one)");
            None
        }
    }
}

pub fn request(language: Language, code: &str) -> Request {
    Request {
        language,
        code: code.into(),
        stdin: String::new(),
    }
}

pub fn py(code: &str) -> Request {
    request(Language::Python, code)
}

/// Runs, then checks nothing of the run is left: no container of this backend, no process.
pub async fn run(backend: &Backend, request: Request) -> RunOutput {
    let output = backend.run(&request).await.unwrap();
    assert_nothing_left(backend, None).await;
    output
}

/// Waits up to 10 s for this backend's containers (Docker) and for host processes whose command
/// line contains `marker` to be gone; fails if they stay.
pub async fn assert_nothing_left(backend: &Backend, marker: Option<&str>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let containers = containers_of(backend).await;
        let processes = marker.map(processes_with).unwrap_or_default();
        if containers.is_empty() && processes.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: containers {containers:?}, processes {processes:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Ids of the containers this backend made (none for the process backend).
pub async fn containers_of(backend: &Backend) -> Vec<String> {
    let Backend::Docker(docker) = backend else {
        return Vec::new();
    };
    let filter = format!("{LABEL}={}", docker.instance);
    let options = ListContainersOptions {
        all: true,
        filters: Some([("label".to_owned(), vec![filter])].into()),
        ..Default::default()
    };
    let listed = docker.docker.list_containers(Some(options)).await.unwrap();
    listed.into_iter().filter_map(|c| c.id).collect()
}

/// Host pids whose command line contains `marker`.
pub fn processes_with(marker: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
        })
        .collect()
}

/// A marker no other test uses, to find a run's processes on the host.
pub fn marker() -> String {
    format!("agentq-mark-{}", uuid::Uuid::new_v4().simple())
}

/// `both!(name, timeout_ms, scenario)`: a process-backend test and a Docker test of `scenario`.
macro_rules! both {
    ($name:ident, $timeout_ms:expr, $scenario:path) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn process() {
                let settings = settings(Duration::from_millis($timeout_ms));
                $scenario(process_backend(&settings)).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn docker() {
                let settings = settings(Duration::from_millis($timeout_ms));
                if let Some(backend) = docker_backend(&settings) {
                    $scenario(backend).await;
                }
            }
        }
    };
}
pub(crate) use both;

#[test]
fn docker_mode_refuses_to_start_without_an_engine() {
    let mut settings = settings(Duration::from_secs(1));
    settings.mode = SandboxMode::Docker;
    let err = Backend::choose_at(&settings, "/nonexistent/docker.sock")
        .err()
        .expect("no engine there");
    assert!(
        err.to_string()
            .starts_with("no Docker engine answers on /nonexistent"),
        "{err}"
    );
    settings.mode = SandboxMode::Auto;
    let fallback = Backend::choose_at(&settings, "/nonexistent/docker.sock").unwrap();
    assert_eq!(fallback.name(), "process");
}
