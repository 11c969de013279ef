//! A local server that speaks the Anthropic Messages API (`POST /v1/messages`).
//!
//! It has two jobs:
//! - the project's *fake* Claude for tests: conversations are scripted per marker
//!   (see [`FakeLlm::script`]) and every call, accepted or refused, is recorded;
//! - the *local stand-in model* (see [`serve`]) that the demo talks to when no
//!   Anthropic key is configured, so the agent loop still runs end to end.
//!
//! Requests are validated the way the real API validates them, so a malformed
//! request that the real API would refuse is refused here too.

mod blocks;
mod conversation;
mod http;
mod messages;
mod model;
mod turn;
mod validate;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests_model;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests_validation;

pub use turn::Turn;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use anyhow::Context as _;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use serde_json::{Value, json};

use http::{Reply, ensure_request_id, handle_messages, not_found, random_id};

/// The real API accepts request bodies up to 32 MB.
const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// Token usage as reported in a response's `usage` object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub cache_read_input_tokens: u64,
}

impl Usage {
    fn to_json(self) -> Value {
        json!({
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
        })
    }
}

/// One `POST /v1/messages` call as the server saw and answered it.
#[derive(Clone, Debug)]
pub struct RecordedCall {
    /// HTTP status we answered.
    pub status: u16,
    /// Parsed request body (`Value::Null` if it was not JSON).
    pub request: Value,
    /// The body we answered.
    pub response: Value,
    /// Usage we reported (`None` on errors).
    pub usage: Option<Usage>,
    pub received_at: Instant,
}

#[derive(Default)]
struct Inner {
    scripts: Vec<Script>,
    calls: Vec<RecordedCall>,
    /// Calls are not kept (a long-running stand-in model, a benchmark).
    unrecorded: bool,
}

struct Script {
    marker: String,
    turns: Vec<Turn>,
    /// `Some(n)`: answer the calls in order (n answered so far); `None`: pick the turn by the
    /// conversation's assistant messages.
    sequential: Option<usize>,
}

/// A scriptable, recording Anthropic Messages API server. Cheap to clone; clones share state.
#[derive(Clone, Default)]
pub struct FakeLlm {
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for FakeLlm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        f.debug_struct("FakeLlm")
            .field("scripts", &inner.scripts.len())
            .field("calls", &inner.calls.len())
            .finish()
    }
}

impl FakeLlm {
    pub fn new() -> Self {
        Self::default()
    }

    /// A server that keeps no record of its calls, so its memory stays flat however many it
    /// answers (the demo's stand-in model, benchmarks).
    pub fn unrecorded() -> Self {
        let llm = Self::default();
        llm.lock().unrecorded = true;
        llm
    }

    /// Conversations whose first user message text contains `marker` are answered from
    /// `turns`; the turn used is the number of assistant messages already in the request.
    /// Past the end of the script the answer is a 500 `api_error` "script exhausted".
    /// Scripting the same marker again replaces its turns; otherwise the earliest
    /// registered marker that matches wins.
    pub fn script(&self, marker: &str, turns: Vec<Turn>) {
        self.add_script(marker, turns, None);
    }

    /// Like [`FakeLlm::script`], but the calls of the marker's conversations take the turns in
    /// order, whatever the conversation holds: for retries of one request and repair turns.
    pub fn script_calls(&self, marker: &str, turns: Vec<Turn>) {
        self.add_script(marker, turns, Some(0));
    }

    fn add_script(&self, marker: &str, turns: Vec<Turn>, sequential: Option<usize>) {
        let mut inner = self.lock();
        let script = Script {
            marker: marker.to_owned(),
            turns,
            sequential,
        };
        match inner.scripts.iter_mut().find(|s| s.marker == marker) {
            Some(slot) => *slot = script,
            None => inner.scripts.push(script),
        }
    }

    /// `POST /v1/messages` and `GET /healthz` (200 "ok").
    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/messages", post(handle_messages))
            .route("/healthz", get(|| async { "ok" }))
            .fallback(not_found)
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            .layer(axum::middleware::map_response(ensure_request_id))
            .with_state(self.clone())
    }

    /// Binds 127.0.0.1 on a free port, serves in a background tokio task, returns the address.
    pub async fn spawn(&self) -> anyhow::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .context("binding the stand-in LLM to 127.0.0.1")?;
        let addr = listener.local_addr()?;
        let app = self.router();
        tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, app).await {
                tracing::error!(%err, "stand-in LLM server stopped");
            }
        });
        Ok(addr)
    }

    /// Every call, accepted or refused, in arrival order.
    pub fn calls(&self) -> Vec<RecordedCall> {
        self.lock().calls.clone()
    }

    /// The calls whose first user message contains `marker`.
    pub fn calls_for(&self, marker: &str) -> Vec<RecordedCall> {
        self.lock()
            .calls
            .iter()
            .filter(|c| {
                conversation::first_user_text(&c.request).is_some_and(|t| t.contains(marker))
            })
            .cloned()
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Answers a request that passed validation: from a script if one matches, else as the stand-in model.
    fn answer(&self, request: &Value) -> Reply {
        let first = conversation::first_user_text(request).unwrap_or_default();
        let mut index = conversation::assistant_count(request);
        let scripted = {
            let mut inner = self.lock();
            let script = inner
                .scripts
                .iter_mut()
                .find(|s| first.contains(s.marker.as_str()));
            script.map(|script| {
                if let Some(answered) = script.sequential.as_mut() {
                    index = *answered;
                    *answered += 1;
                }
                script
                    .turns
                    .get(index)
                    .cloned()
                    .ok_or((script.marker.clone(), script.turns.len()))
            })
        };
        match scripted {
            None => model::respond(request),
            Some(Ok(turn)) => turn.reply(request),
            Some(Err((marker, scripted_turns))) => {
                tracing::warn!(%marker, scripted_turns, turn = index, "stand-in LLM script exhausted");
                Reply::error(500, "api_error", "script exhausted")
            }
        }
    }
}

/// Runs the stand-in model ([`FakeLlm::new`] with no scripts) on `listen` until the process ends.
pub async fn serve(listen: SocketAddr) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the stand-in LLM to {listen}"))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "agentq stand-in model (not Claude) listening on /v1/messages");
    axum::serve(listener, FakeLlm::unrecorded().router())
        .await
        .context("serving the stand-in LLM")
}
