//! Client commands: talk to agentq-api at AGENTQ_URL with AGENTQ_API_KEY.

use std::time::Duration;

use agentq_shared::schemas::{
    AgentRunRequest, AgentRunResponse, AgentSession, IfBusy, Message, OnApprovalTimeout,
};
use anyhow::{Context, bail};
use serde_json::Value;

use super::render;
use crate::args::Command;

const POLL_EVERY: Duration = Duration::from_millis(250);

pub(super) struct Client {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Client {
    /// A client of the API at `base` with `key`.
    pub(super) fn new(base: &str, key: &str) -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?,
            base: base.trim_end_matches('/').to_owned(),
            key: key.to_owned(),
        })
    }

    fn from_env() -> anyhow::Result<Self> {
        let base = std::env::var("AGENTQ_URL")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| "http://127.0.0.1:8080".into());
        let key = std::env::var("AGENTQ_API_KEY")
            .ok()
            .filter(|k| !k.is_empty())
            .context(
                "AGENTQ_API_KEY is not set; create one with `agentq admin create-key --org NAME`",
            )?;
        Self::new(&base, &key)
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.key);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach agentq-api at AGENTQ_URL={}", self.base))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let message = body["error"]["message"]
                .as_str()
                .unwrap_or("no error message");
            let code = body["error"]["code"].as_str().unwrap_or("unknown");
            bail!("agentq-api answered {status} ({code}): {message}");
        }
        Ok(body)
    }

    /// Starts a session; with `follow`, prints its steps as they finish and returns 0 when it
    /// completed, 1 otherwise.
    pub(super) async fn start(
        &self,
        request: &AgentRunRequest,
        follow: bool,
        json: bool,
    ) -> anyhow::Result<i32> {
        let body = serde_json::to_value(request)?;
        let created = self
            .call(reqwest::Method::POST, "/v1/agents/run", Some(&body))
            .await?;
        let created: AgentRunResponse = serde_json::from_value(created)?;
        if !follow {
            print_value(json, &serde_json::to_value(&created)?, || {
                println!("session {} {}", created.session_id, created.status);
            });
            return Ok(0);
        }
        if !json {
            println!("session {} started", created.session_id);
        }
        follow_session(self, &created.session_id.to_string(), json).await
    }

    async fn session(&self, id: &str) -> anyhow::Result<AgentSession> {
        let body = self
            .call(reqwest::Method::GET, &format!("/v1/agents/{id}"), None)
            .await?;
        serde_json::from_value(body).context("unexpected session JSON from agentq-api")
    }
}

pub async fn run(command: Command) -> anyhow::Result<i32> {
    let client = Client::from_env()?;
    match command {
        Command::Run {
            question,
            model,
            tools,
            max_steps,
            max_tokens,
            max_cost_usd,
            react_mode,
            approval_timeout,
            on_approval_timeout,
            if_busy,
            webhook_url,
            follow,
            json,
        } => {
            let max_cost_usd = match max_cost_usd {
                Some(cost) => Some(
                    cost.parse()
                        .context("--max-cost-usd must be a number such as 0.25")?,
                ),
                None => None,
            };
            let react_mode = match react_mode {
                Some(mode) => Some(
                    serde_json::from_value(Value::String(mode))
                        .context("--react-mode must be native or json")?,
                ),
                None => None,
            };
            let request = AgentRunRequest {
                messages: vec![Message {
                    role: "user".into(),
                    content: question,
                }],
                model,
                tools,
                max_steps,
                max_tokens,
                max_cost_usd,
                react_mode,
                approval_timeout,
                on_approval_timeout: on_approval_timeout
                    .as_deref()
                    .and_then(OnApprovalTimeout::parse),
                if_busy: match if_busy.as_deref() {
                    Some("reject") => Some(IfBusy::Reject),
                    Some(_) => Some(IfBusy::Queue),
                    None => None,
                },
                webhook_url,
            };
            client.start(&request, follow, json).await
        }
        Command::Get { id, json } => {
            let session = client.session(&id).await?;
            print_value(json, &serde_json::to_value(&session)?, || {
                render::session(&session)
            });
            Ok(0)
        }
        Command::Cancel { id } => {
            let body = client
                .call(
                    reqwest::Method::POST,
                    &format!("/v1/agents/{id}/cancel"),
                    None,
                )
                .await?;
            println!(
                "cancel requested; status {}",
                body["status"].as_str().unwrap_or("unknown")
            );
            Ok(0)
        }
        Command::Approve {
            id,
            step,
            reject,
            reason,
        } => {
            let decision = serde_json::json!({"step": step, "approved": !reject, "reason": reason});
            let body = client
                .call(
                    reqwest::Method::POST,
                    &format!("/v1/agents/{id}/approve"),
                    Some(&decision),
                )
                .await?;
            println!(
                "step {step} {}; status {}",
                if reject { "rejected" } else { "approved" },
                body["status"].as_str().unwrap_or("unknown")
            );
            Ok(0)
        }
        Command::Tools { json } => {
            let body = client.call(reqwest::Method::GET, "/v1/tools", None).await?;
            print_value(json, &body, || render::tools(&body));
            Ok(0)
        }
        Command::Admin(_)
        | Command::StandInLlm { .. }
        | Command::Tool(_)
        | Command::Bench(_)
        | Command::Dev(_) => {
            unreachable!("handled by commands::run")
        }
    }
}

fn print_value(json: bool, value: &Value, text: impl FnOnce()) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
    } else {
        text();
    }
}

/// Polls until the session finishes, printing each step once it is complete. The exit code is 0
/// for a completed session and 1 otherwise.
async fn follow_session(client: &Client, id: &str, json: bool) -> anyhow::Result<i32> {
    let mut printed = 0;
    let mut shown_approval = None;
    loop {
        let session = client.session(id).await?;
        if !json {
            for step in session.steps.iter().skip(printed) {
                if step.finished_at.is_none() && !step.is_final {
                    break;
                }
                render::step(step);
                printed += 1;
            }
        }
        if !json
            && let Some(pending) = &session.pending_approval
            && shown_approval != Some(pending.step)
        {
            render::pending_approval(pending);
            shown_approval = Some(pending.step);
        }
        if session.status.is_terminal() {
            if json {
                println!("{}", serde_json::to_string_pretty(&session)?);
            } else {
                render::outcome(&session);
            }
            return Ok(
                if session.status == agentq_shared::schemas::SessionStatus::Completed {
                    0
                } else {
                    1
                },
            );
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}
