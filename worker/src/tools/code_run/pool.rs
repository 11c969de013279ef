//! Pre-created, never-started containers, so a run skips `create` (FIELD_NOTES: ≈20 ms). A
//! container serves one run only: reusing a started one would leak processes and files between
//! runs. Also the clean-up of containers a dead worker left behind.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::Docker;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{ListContainersOptions, RemoveContainerOptions};
use tokio_util::task::TaskTracker;

use super::Language;

#[derive(Clone)]
pub struct Pool {
    docker: Docker,
    size: usize,
    /// To reconnect from a fresh runtime when the pool is dropped.
    socket: String,
    version: bollard::ClientVersion,
    ready: Arc<Mutex<HashMap<Language, Vec<String>>>>,
    /// Set when the backend goes away: a container created after that is removed at once.
    closed: Arc<AtomicBool>,
    /// Background removals and refills, so a short-lived process can wait for them.
    pub(super) tasks: TaskTracker,
}

impl Pool {
    pub fn new(docker: Docker, size: usize, socket: &str, version: bollard::ClientVersion) -> Self {
        Self {
            docker,
            size,
            socket: socket.to_owned(),
            version,
            ready: Arc::default(),
            closed: Arc::default(),
            tasks: TaskTracker::new(),
        }
    }

    /// A pre-created container for `language`, if one is ready. Call [`Pool::refill`] once the
    /// run no longer needs the engine's attention.
    pub fn take(&self, language: Language) -> Option<String> {
        if self.size == 0 {
            return None;
        }
        self.lock().get_mut(&language).and_then(Vec::pop)
    }

    /// Creates replacements in the background. Done after a run rather than when its container
    /// is taken: a create running in the engine while the run starts slows the start down.
    pub fn refill(&self, language: Language, body: &ContainerCreateBody) {
        if self.size == 0 {
            return;
        }
        let pool = self.clone();
        let body = body.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let tasks = self.tasks.clone();
            tasks.spawn_on(async move { pool.top_up(language, &body).await }, &runtime);
        }
    }

    /// Waits until every removal and refill started so far is done (up to `patience`): a
    /// process about to exit calls this, or its runtime would drop them half-way.
    pub async fn settle(&self, patience: Duration) {
        self.tasks.close();
        let _ = tokio::time::timeout(patience, self.tasks.wait()).await;
        self.tasks.reopen();
    }

    async fn top_up(&self, language: Language, body: &ContainerCreateBody) {
        while self.lock().get(&language).map_or(0, Vec::len) < self.size {
            match self.docker.create_container(None, body.clone()).await {
                Ok(created) if self.closed.load(Ordering::SeqCst) => {
                    remove(&self.docker, &created.id).await;
                    return;
                }
                Ok(created) => self.lock().entry(language).or_default().push(created.id),
                Err(e) => {
                    tracing::warn!(error = %e, "code_run: could not pre-create a container");
                    return;
                }
            }
        }
    }

    /// How many containers are ready per language (for tests and the benchmark).
    pub fn ready(&self, language: Language) -> usize {
        self.lock().get(&language).map_or(0, Vec::len)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Language, Vec<String>>> {
        self.ready
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Removes every pre-created container, waiting up to 5 s (the backend is going away, maybe
    /// with its runtime: a thread of its own with a runtime and a connection of its own).
    pub fn drain(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let ids: Vec<String> = self.lock().drain().flat_map(|(_, ids)| ids).collect();
        if ids.is_empty() {
            return;
        }
        let (socket, version) = (self.socket.clone(), self.version);
        let remover = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            let docker = Docker::connect_with_unix(&socket, 5, &version);
            let (Ok(runtime), Ok(docker)) = (runtime, docker) else {
                return;
            };
            let all = futures::future::join_all(ids.iter().map(|id| remove(&docker, id)));
            runtime
                .block_on(async { tokio::time::timeout(Duration::from_secs(5), all).await })
                .ok();
        });
        let _ = remover.join();
    }
}

/// Kills and removes a container on the Tokio runtime, without waiting; `tasks` tracks it.
pub fn remove_later(tasks: &TaskTracker, docker: Docker, id: String) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        tasks.spawn_on(async move { remove(&docker, &id).await }, &runtime);
    }
}

pub async fn remove(docker: &Docker, id: &str) {
    let options = RemoveContainerOptions {
        force: true,
        v: true,
        ..Default::default()
    };
    let removed = docker.remove_container(id, Some(options)).await;
    // 404: already gone (auto-removed, or removed by another worker's clean-up).
    if let Err(e) = removed
        && !matches!(
            e,
            bollard::errors::Error::DockerResponseServerError {
                status_code: 404,
                ..
            }
        )
    {
        tracing::warn!(container = id, error = %e, "code_run: could not remove a container");
    }
}

/// Removes sandbox containers created more than `grace` ago: no run lasts that long, so they
/// were left by a worker that died (a live worker's pooled container removed here is replaced
/// by a fresh one when its turn comes).
/// `label` is the filter: `LABEL` for every sandbox container, `LABEL=instance` for one backend's.
pub async fn remove_leftovers(docker: &Docker, label: &str, grace: Duration) -> usize {
    let options = ListContainersOptions {
        all: true,
        filters: Some(HashMap::from([("label".into(), vec![label.into()])])),
        ..Default::default()
    };
    let Ok(containers) = docker.list_containers(Some(options)).await else {
        return 0;
    };
    let now = chrono::Utc::now().timestamp();
    let stale: Vec<String> = containers
        .into_iter()
        .filter(|c| c.created.unwrap_or(0) <= now - grace.as_secs() as i64)
        .filter_map(|c| c.id)
        .collect();
    for id in &stale {
        remove(docker, id).await;
    }
    if !stale.is_empty() {
        tracing::info!(
            count = stale.len(),
            "code_run: removed leftover sandbox containers"
        );
    }
    stale.len()
}
