//! `agentq dev`: the whole system in one process on embedded storage. The API and N workers run
//! the same code as `agentq-api` and `agentq-worker`, over SQLite instead of Postgres
//! (`<data-dir>/agentq.db`), apalis-sqlite instead of Redis for the queue (`<data-dir>/queue.db`)
//! and no hot copy. Everything lives in the data directory, so stopping and starting again keeps
//! every session, and a session cut short by a crash is carried on by the reconciler.
//!
//! Without `ANTHROPIC_API_KEY` it serves agentq's stand-in model in this process and says so.
//! The dev key is kept in `<data-dir>/dev-key`: the same on every start.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use agentq_shared::config::{ApiConfig, Env, WorkerConfig};
use agentq_shared::schemas::{AgentRunRequest, Message};
use agentq_shared::store::Store;
use anyhow::Context as _;
use tokio::sync::watch;

use super::client::Client;
use crate::args::Dev;

const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

pub async fn run(dev: Dev) -> anyhow::Result<i32> {
    std::fs::create_dir_all(&dev.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            dev.data_dir.display()
        )
    })?;
    let data_dir = dev
        .data_dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", dev.data_dir.display()))?;
    let mut vars: Vec<(String, String)> = std::env::vars().collect();
    let set = |vars: &mut Vec<(String, String)>, name: &str, value: String| {
        vars.retain(|(k, _)| k != name);
        vars.push((name.to_owned(), value));
    };
    let get = |vars: &[(String, String)], name: &str| {
        vars.iter()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.clone())
    };
    // Embedded storage, whatever DATABASE_URL and REDIS_URL say: `agentq dev` needs neither.
    let database_url = format!("sqlite://{}", data_dir.join("agentq.db").display());
    set(&mut vars, "DATABASE_URL", database_url.clone());
    set(&mut vars, "AGENTQ_HOT_COPY", "none".into());
    if get(&vars, "REDIS_URL").is_none() {
        // Required by the shared configuration, never connected to in dev mode.
        set(&mut vars, "REDIS_URL", "redis://127.0.0.1:6379".into());
    }
    let listen = get(&vars, "AGENTQ_LISTEN").unwrap_or_else(|| DEFAULT_LISTEN.into());
    set(&mut vars, "AGENTQ_LISTEN", listen.clone());

    // The stand-in answers for Anthropic only; an OpenAI-compatible provider is left as set.
    let stand_in = get(&vars, "ANTHROPIC_API_KEY").is_none()
        && get(&vars, "AGENTQ_LLM_PROVIDER").is_none_or(|p| p == "anthropic");
    if stand_in {
        let model = crate::stand_in::FakeLlm::unrecorded();
        let address = model.spawn().await.context("starting the stand-in model")?;
        println!(
            "ANTHROPIC_API_KEY is not set: using agentq's local stand-in model at http://{address} \
             (deterministic, not Claude)"
        );
        set(&mut vars, "ANTHROPIC_BASE_URL", format!("http://{address}"));
        set(
            &mut vars,
            "ANTHROPIC_API_KEY",
            "stand-in-needs-no-key".into(),
        );
        // `echo`, a harmless test tool, lets the stand-in show a tool call.
        set(&mut vars, "AGENTQ_TEST_TOOLS", "true".into());
    }

    let env = Env::from_pairs(&vars);
    let api_config = ApiConfig::from_env(&env).context("configuring the API")?;
    let mut worker_config = WorkerConfig::from_env(&env).context("configuring the workers")?;
    if worker_config.metrics_listen.take().is_some() {
        // One process: the API's /metrics already shows the workers' figures.
        println!("agentq dev: AGENTQ_METRICS_LISTEN is ignored; /metrics on the API covers it all");
    }
    let store = Store::connect_durable(&database_url).await?;
    let key = dev_key(&store, &data_dir.join("dev-key")).await?;

    let (stop, stopped) = watch::channel(false);
    let state = agentq_api::AppState::build(api_config)
        .await
        .context("starting the API")?;
    let address: SocketAddr = listen.parse().with_context(|| {
        format!("AGENTQ_LISTEN={listen} is not an address such as {DEFAULT_LISTEN}")
    })?;
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on AGENTQ_LISTEN={listen}"))?;
    let url = format!("http://{}", listener.local_addr()?);
    agentq_api::start_admin(&state).await?;
    let mut tasks = tokio::task::JoinSet::new();
    {
        let stopped = stopped.clone();
        tasks.spawn(async move {
            axum::serve(listener, agentq_api::app(state))
                .with_graceful_shutdown(until(stopped))
                .await
                .context("serving the API")
        });
    }
    for _ in 0..dev.workers.max(1) {
        let (config, stopped) = (worker_config.clone(), stopped.clone());
        tasks.spawn(async move {
            agentq_worker::run_until(config, async move {
                until(stopped).await;
                Ok(())
            })
            .await
        });
    }
    println!(
        "agentq dev: the API is at {url}, with {} worker(s)",
        dev.workers.max(1)
    );
    println!("agentq dev: data in {}", data_dir.display());
    println!("agentq dev: dev key (the same on every start): {key}");
    println!("  export AGENTQ_URL={url} AGENTQ_API_KEY={key}");
    println!("agentq dev: watch sessions at {url}/ui (sign in with the dev key)");

    let mut code = 0;
    if let Some(question) = dev.question {
        let client = Client::new(&url, &key)?;
        let tools = dev.tools.or_else(|| stand_in.then(|| vec!["echo".into()]));
        let request = AgentRunRequest {
            messages: vec![Message {
                role: "user".into(),
                content: question,
            }],
            model: None,
            tools,
            max_steps: None,
            max_tokens: None,
            max_cost_usd: None,
            react_mode: None,
            approval_timeout: None,
            on_approval_timeout: None,
            if_busy: None,
            webhook_url: None,
        };
        tokio::select! {
            followed = client.start(&request, true, false) => code = followed?,
            _ = tokio::signal::ctrl_c() => return stop_all(stop, tasks, 130).await,
        }
        if dev.exit {
            return stop_all(stop, tasks, code).await;
        }
    }
    println!("agentq dev: running until Ctrl-C");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        ended = tasks.join_next() => {
            // A part stopped on its own (an error it could not recover from).
            if let Some(Ok(Err(e))) = ended {
                let _ = stop.send(true);
                return Err(e);
            }
        }
    }
    stop_all(stop, tasks, code).await
}

/// Resolves once `stop` is sent (or its sender is gone).
async fn until(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

/// Stops the API and the workers (running steps get the shutdown grace), then returns `code`.
async fn stop_all(
    stop: watch::Sender<bool>,
    mut tasks: tokio::task::JoinSet<anyhow::Result<()>>,
    code: i32,
) -> anyhow::Result<i32> {
    println!("agentq dev: stopping");
    let _ = stop.send(true);
    let drained = async {
        while let Some(ended) = tasks.join_next().await {
            if let Ok(Err(e)) = ended {
                tracing::warn!(error = %e, "a part of agentq dev stopped with an error");
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(30), drained)
        .await
        .is_err()
    {
        tracing::warn!("agentq dev: parts still running after 30 s; leaving them");
    }
    Ok(code)
}

/// The data directory's API key: read from `path` when it still opens the store, else made
/// (org `dev`) and written there, readable by this user only.
async fn dev_key(store: &Store, path: &Path) -> anyhow::Result<String> {
    if let Ok(kept) = std::fs::read_to_string(path) {
        let kept = kept.trim().to_owned();
        if !kept.is_empty() && store.authenticate(&kept).await?.is_some() {
            return Ok(kept);
        }
    }
    let (_, key) = store.create_api_key("dev").await?;
    write_private(path, &key)
        .with_context(|| format!("cannot keep the dev key in {}", path.display()))?;
    Ok(key)
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())?;
    file.write_all(b"\n")
}
