//! The public data model: what clients send and what they read back.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub const DEFAULT_MAX_STEPS: u32 = 10;
pub const MAX_STEPS_LIMIT: u32 = 50;
const MAX_MODEL_NAME: usize = 100;
/// Postgres cannot store U+0000, and no text a client means to send contains one.
pub const NUL_MESSAGE: &str = "must not contain the NUL character (U+0000)";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    /// Waiting for one of its org's session slots (`AGENTQ_ORG_MAX_ACTIVE_SESSIONS`); started
    /// in order as slots free up.
    Queued,
    Pending,
    Running,
    AwaitingApproval,
    Completed,
    Failed,
    Cancelled,
}

impl SessionStatus {
    pub const TERMINAL: [SessionStatus; 3] = [Self::Completed, Self::Failed, Self::Cancelled];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Pending => "pending",
            Self::Running => "running",
            Self::AwaitingApproval => "awaiting_approval",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Queued,
            Self::Pending,
            Self::Running,
            Self::AwaitingApproval,
            Self::Completed,
            Self::Failed,
            Self::Cancelled,
        ]
        .into_iter()
        .find(|status| status.as_str() == s)
    }

    pub fn is_terminal(self) -> bool {
        Self::TERMINAL.contains(&self)
    }
}

impl std::fmt::Display for SessionStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A tool the model chose to call, with the arguments it gave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ToolCall {
    pub tool: String,
    /// The arguments, as the model gave them (a JSON object).
    pub args: serde_json::Value,
}

/// Tokens of one LLM call or a sum of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    /// The part of `cache_write_tokens` written with a 1-hour TTL (priced apart).
    #[serde(default)]
    pub cache_write_1h_tokens: u64,
}

impl Usage {
    pub fn add(&mut self, other: Usage) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cache_read_tokens += other.cache_read_tokens;
        self.cache_write_tokens += other.cache_write_tokens;
        self.cache_write_1h_tokens += other.cache_write_1h_tokens;
    }

    /// Every billed token.
    pub fn total(&self) -> u64 {
        self.input_tokens + self.output_tokens + self.cache_read_tokens + self.cache_write_tokens
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AgentStep {
    pub index: u32,
    pub thought: Option<String>,
    pub action: Option<ToolCall>,
    /// The tool's `ToolResult`, as JSON, once the tool has run.
    pub observation: Option<serde_json::Value>,
    /// Every tool call of the model's turn, in order (`action` is the first), when it made several.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<ToolCall>,
    /// Their results, in the same order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub observations: Vec<serde_json::Value>,
    /// What the model answered when it was not what we asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid_output: Option<String>,
    pub is_final: bool,
    pub final_answer: Option<String>,
    /// Tokens of every LLM call made for this step (retries included).
    pub usage: Usage,
    /// `None` when a call used a model without a known price.
    pub cost_usd: Option<Decimal>,
    /// A human's decision on this step's tool call, for tools that require approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<StepApproval>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StepApproval {
    pub approved: bool,
    pub reason: Option<String>,
    /// The API key that decided.
    pub decided_by: Option<Uuid>,
    pub decided_at: DateTime<Utc>,
}

/// The model's turn a session waits on while `awaiting_approval`. One decision covers every call
/// of the turn, and none of them runs before it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PendingApproval {
    pub step: u32,
    /// The first call that needs approval (also listed in `calls`).
    pub tool: String,
    pub args: serde_json::Value,
    /// What the tool says about that call (e.g. sql_query's classification of the query).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
    /// Every call of the turn, in the order they will run once approved.
    #[serde(default)]
    pub calls: Vec<PendingCall>,
    pub expires_at: DateTime<Utc>,
}

/// One tool call of a turn awaiting approval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PendingCall {
    /// Its position in the turn, from 0.
    pub call: u32,
    /// The model's id of the call (native tool use), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub tool: String,
    pub args: serde_json::Value,
    /// Whether this call is why the turn waits. A rejection refuses exactly these calls; the
    /// others run as shown.
    pub requires_approval: bool,
    /// What the tool says about this call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

/// What the worker stores for each call of a turn it holds for approval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallReview {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub requires_approval: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

/// `POST /v1/agents/{id}/approve`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovalRequest {
    /// The step awaiting approval (`pending_approval.step`).
    pub step: u32,
    /// Whether every call of that step may run.
    pub approved: bool,
    /// Why; recorded with the decision. No NUL character.
    #[serde(default)]
    #[schema(pattern = r"^[^\u0000]*$")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Totals {
    pub steps: u32,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    /// Sum of the cost ledger; `None` if any call has no known price.
    pub cost_usd: Option<Decimal>,
    pub llm_calls: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SessionError {
    pub code: FailureCode,
    pub message: String,
}

/// Why a session failed: `error.code`, a stable machine-readable string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailureCode {
    /// The agent used all `max_steps` without a final answer.
    MaxStepsExceeded,
    /// The session ran past its deadline (`AGENTQ_SESSION_DEADLINE_SECS`).
    DeadlineExceeded,
    /// No one approved or rejected the pending tool calls in time.
    ApprovalExpired,
    /// The provider refused the request for good (a 4xx other than 429, or retries ran out).
    LlmError,
    /// LLM calls kept timing out.
    LlmTimeout,
    /// The model's answer could not be used, even after a repair turn.
    InvalidModelOutput,
    /// The model's answer was cut at max_tokens, even after a repair turn.
    MaxTokens,
    /// The model refused.
    Refusal,
    /// The session spent its `max_tokens` or `max_cost_usd`.
    BudgetExceeded,
    /// A step failed on every one of its deliveries (`AGENTQ_STEP_MAX_ATTEMPTS`).
    StepRetriesExhausted,
    /// A code this version does not know (written by a newer one).
    #[serde(other)]
    Unknown,
}

impl FailureCode {
    pub const ALL: [FailureCode; 10] = [
        Self::MaxStepsExceeded,
        Self::DeadlineExceeded,
        Self::ApprovalExpired,
        Self::LlmError,
        Self::LlmTimeout,
        Self::InvalidModelOutput,
        Self::MaxTokens,
        Self::Refusal,
        Self::BudgetExceeded,
        Self::StepRetriesExhausted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::MaxStepsExceeded => "max_steps_exceeded",
            Self::DeadlineExceeded => "deadline_exceeded",
            Self::ApprovalExpired => "approval_expired",
            Self::LlmError => "llm_error",
            Self::LlmTimeout => "llm_timeout",
            Self::InvalidModelOutput => "invalid_model_output",
            Self::MaxTokens => "max_tokens",
            Self::Refusal => "refusal",
            Self::BudgetExceeded => "budget_exceeded",
            Self::StepRetriesExhausted => "step_retries_exhausted",
            Self::Unknown => "unknown",
        }
    }

    /// The code stored as `s` (`Unknown` for one this version does not know).
    pub fn parse(s: &str) -> Self {
        Self::ALL
            .into_iter()
            .find(|code| code.as_str() == s)
            .unwrap_or(Self::Unknown)
    }
}

impl std::fmt::Display for FailureCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for FailureCode {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for FailureCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AgentSession {
    pub session_id: Uuid,
    pub org_id: Uuid,
    pub status: SessionStatus,
    pub model: String,
    pub cancel_requested: bool,
    pub steps: Vec<AgentStep>,
    pub final_answer: Option<String>,
    pub error: Option<SessionError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_approval: Option<PendingApproval>,
    pub totals: Totals,
    pub deadline_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Monotonic change counter; a snapshot never replaces a newer one.
    pub version: i64,
}

/// One event of a session's stream (`GET /v1/agents/{id}/events`), numbered 1, 2, 3, ... per
/// session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SessionEvent {
    pub seq: i64,
    pub kind: EventKind,
    /// `status`: `{status, error}`. `step`: `{step, phase: "decided", thought, actions, is_final,
    /// final_answer}` or `{step, phase: "observed", call, observation}`. `approval`: `{state:
    /// "pending", step, calls, expires_at}` or `{state: "decided", step, approved, reason,
    /// decided_by, decided_at}`. `done`: `{status, final_answer, error, totals}`.
    pub data: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The session's status changed.
    Status,
    /// A step's decision, or one of its results, was stored.
    Step,
    /// Tool calls wait for a human, or a human decided.
    Approval,
    /// The session ended; the last event of the stream.
    Done,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Status => "status",
            Self::Step => "step",
            Self::Approval => "approval",
            Self::Done => "done",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Status, Self::Step, Self::Approval, Self::Done]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// A session in a listing (`GET /v1/agents`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SessionSummary {
    pub session_id: Uuid,
    pub status: SessionStatus,
    pub model: String,
    /// Steps decided so far.
    pub steps: u32,
    /// From the cost ledger; `None` if a call had no known price.
    pub cost_usd: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<SessionError>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A page of `GET /v1/agents`, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SessionList {
    pub sessions: Vec<SessionSummary>,
    /// Pass as `cursor` for the next page; `None` on the last one.
    pub next_cursor: Option<String>,
}

/// What a webhook message is about (its `type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum WebhookEventType {
    /// The session waits for a human to approve or reject its tool calls.
    #[serde(rename = "session.awaiting_approval")]
    AwaitingApproval,
    #[serde(rename = "session.completed")]
    Completed,
    #[serde(rename = "session.failed")]
    Failed,
    #[serde(rename = "session.cancelled")]
    Cancelled,
}

impl WebhookEventType {
    pub const ALL: [WebhookEventType; 4] = [
        Self::AwaitingApproval,
        Self::Completed,
        Self::Failed,
        Self::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::AwaitingApproval => "session.awaiting_approval",
            Self::Completed => "session.completed",
            Self::Failed => "session.failed",
            Self::Cancelled => "session.cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// The body of a webhook message: what happened, when, and the session as the listing shows it
/// (its status and error as of the event). Signed per Standard Webhooks: see the
/// `webhook-id`, `webhook-timestamp` and `webhook-signature` headers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WebhookEvent {
    #[serde(rename = "type")]
    pub event_type: WebhookEventType,
    /// When the event happened (the session event's time).
    pub timestamp: DateTime<Utc>,
    pub data: SessionSummary,
}

/// Where a webhook message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WebhookDeliveryState {
    /// Not delivered yet; `next_attempt_at` says when the next attempt is due.
    Pending,
    /// A 2xx answer came back.
    Delivered,
    /// Every attempt of the retry schedule failed, or the URL was refused.
    Failed,
}

impl WebhookDeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Pending, Self::Delivered, Self::Failed]
            .into_iter()
            .find(|state| state.as_str() == s)
    }
}

/// One webhook message of a session and every attempt to deliver it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WebhookDelivery {
    /// The message's `webhook-id` header, the same on every attempt.
    pub webhook_id: String,
    #[serde(rename = "type")]
    pub event_type: WebhookEventType,
    /// The session event it announces (`seq` in the event stream).
    pub event_seq: i64,
    pub url: String,
    pub state: WebhookDeliveryState,
    /// When the next attempt is due, while pending.
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// When it was delivered or given up.
    pub finished_at: Option<DateTime<Utc>>,
    /// Every attempt recorded, first to last.
    pub attempts: Vec<WebhookAttempt>,
}

/// One try at delivering a webhook message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WebhookAttempt {
    /// 1, 2, 3, ...
    pub attempt: u32,
    pub at: DateTime<Utc>,
    /// The receiver's HTTP status, when it answered.
    pub status_code: Option<u16>,
    /// Why the attempt failed without an answer (refused, could not connect, timed out).
    pub error: Option<String>,
    pub duration_ms: u64,
}

/// `GET /v1/agents/{id}/webhooks`: the session's webhook messages, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WebhookDeliveryList {
    pub deliveries: Vec<WebhookDelivery>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

/// One message of the conversation. System messages may only open it; then `user` and
/// `assistant` alternate, starting and ending with `user`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Message {
    #[schema(value_type = Role)]
    pub role: String,
    /// Not blank; no NUL character.
    #[schema(min_length = 1, pattern = r"^[^\u0000]*[^\s\u0000][^\u0000]*$")]
    pub content: String,
}

impl Message {
    /// The role, once the request has been validated.
    pub fn role(&self) -> Role {
        match self.role.as_str() {
            "system" => Role::System,
            "assistant" => Role::Assistant,
            _ => Role::User,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentRunRequest {
    #[schema(min_items = 1)]
    pub messages: Vec<Message>,
    /// The Claude model; omitted means the deployment's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\u0000]*[^\s\u0000][^\u0000]*$"
    )]
    pub model: Option<String>,
    /// Tool names the agent may use, each once (`GET /v1/tools` lists them); omitted means
    /// every tool this deployment offers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<std::collections::BTreeSet<String>>)]
    pub tools: Option<Vec<String>>,
    /// Most steps (model turns) the session may take; 10 when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 50)]
    pub max_steps: Option<u32>,
    /// Most tokens (input, output and cache) the session may spend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub max_tokens: Option<u64>,
    /// Most USD the session may spend, e.g. 0.50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<f64>, exclusive_minimum = 0)]
    pub max_cost_usd: Option<serde_json::Number>,
    /// `native` (tool use, the default) or `json` (the JSON ReAct protocol).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub react_mode: Option<ReactMode>,
    /// Seconds a tool call waits for a human's approval; the deployment's
    /// `AGENTQ_APPROVAL_TTL_SECS` (a day) when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 604800)]
    pub approval_timeout: Option<u64>,
    /// What happens when no one decides in time: `fail` the session (`approval_expired`, the
    /// default), `reject` the held calls, or `approve` them. The step records which.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_approval_timeout: Option<OnApprovalTimeout>,
    /// What happens when the org already runs as many sessions as it may: `queue` (the
    /// default) creates the session `queued`, started when a slot frees up; `reject` refuses it
    /// with 429 `concurrency_limited`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub if_busy: Option<IfBusy>,
    /// An http(s) URL that gets a signed `WebhookEvent` when the session waits for approval and
    /// when it ends (instead of the org's default URL, if it has one). Private and loopback
    /// addresses are refused unless the deployment's `AGENTQ_WEB_FETCH_ALLOW` opens them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 2048)]
    pub webhook_url: Option<String>,
}

/// What a create does when the org has no free session slot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum IfBusy {
    /// The session is created `queued` and started in order as slots free up.
    #[default]
    Queue,
    /// The session is not created: 429 `concurrency_limited`.
    Reject,
}

/// What a held turn becomes when its approval window closes undecided.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnApprovalTimeout {
    /// The session fails `approval_expired`.
    #[default]
    Fail,
    /// The calls that needed approval are refused, as a human rejection would.
    Reject,
    /// They run, as a human approval would.
    Approve,
}

impl OnApprovalTimeout {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fail => "fail",
            Self::Reject => "reject",
            Self::Approve => "approve",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "fail" => Some(Self::Fail),
            "reject" => Some(Self::Reject),
            "approve" => Some(Self::Approve),
            _ => None,
        }
    }
}

/// How the agent talks to the model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReactMode {
    /// The provider's native tool use.
    #[default]
    Native,
    /// Tools described in the system prompt; the model answers
    /// `{"thought", "action": {"tool", "args"} | null, "is_final", "final_answer"}`.
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AgentRunResponse {
    pub session_id: Uuid,
    pub status: SessionStatus,
    pub poll_url: String,
}

/// One problem with a request, naming the field it is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A request after validation, with every default filled in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidatedRun {
    pub messages: Vec<Message>,
    pub model: String,
    pub tools: Vec<String>,
    pub max_steps: u32,
    #[serde(default)]
    pub react_mode: ReactMode,
    #[serde(default)]
    pub max_tokens: Option<u64>,
    #[serde(default)]
    pub max_cost_usd: Option<Decimal>,
    /// How long a held turn waits for a human, when the request chose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_timeout_secs: Option<u64>,
    #[serde(default)]
    pub on_approval_timeout: OnApprovalTimeout,
    #[serde(default)]
    pub if_busy: IfBusy,
    /// Where the session's webhook events go, when the request named a URL (checked by the
    /// API). The outbox trigger reads it from the stored request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
}

/// Defaults the deployment fills in.
#[derive(Debug, Clone)]
pub struct RunDefaults {
    pub model: String,
    pub react_mode: ReactMode,
}

impl AgentRunRequest {
    /// Checks the request against the tools this deployment offers; every problem is reported.
    pub fn validate(
        self,
        available_tools: &[String],
        defaults: &RunDefaults,
    ) -> Result<ValidatedRun, Vec<FieldError>> {
        let mut errors = validate_messages(&self.messages);
        if self.max_tokens == Some(0) {
            errors.push(FieldError::new("max_tokens", "must be at least 1"));
        }
        if let Some(secs) = self.approval_timeout
            && !(1..=604_800).contains(&secs)
        {
            errors.push(FieldError::new(
                "approval_timeout",
                format!("must be between 1 and 604800 seconds (a week), got {secs}"),
            ));
        }
        let max_cost_usd = match &self.max_cost_usd {
            None => None,
            Some(number) => match number.to_string().parse::<Decimal>() {
                Ok(cost) if cost > Decimal::ZERO => Some(cost),
                _ => {
                    errors.push(FieldError::new(
                        "max_cost_usd",
                        format!("must be a positive amount of USD, got {number}"),
                    ));
                    None
                }
            },
        };
        let model = match self.model {
            None => defaults.model.clone(),
            Some(model) if model.contains('\0') => {
                errors.push(FieldError::new("model", NUL_MESSAGE));
                model
            }
            Some(model) if model.trim().is_empty() || model.chars().count() > MAX_MODEL_NAME => {
                errors.push(FieldError::new(
                    "model",
                    format!(
                        "must be a non-empty model name of at most {MAX_MODEL_NAME} characters"
                    ),
                ));
                model
            }
            Some(model) => model,
        };
        let max_steps = self.max_steps.unwrap_or(DEFAULT_MAX_STEPS);
        if !(1..=MAX_STEPS_LIMIT).contains(&max_steps) {
            errors.push(FieldError::new(
                "max_steps",
                format!("must be between 1 and {MAX_STEPS_LIMIT}, got {max_steps}"),
            ));
        }
        let tools = self.tools.unwrap_or_else(|| available_tools.to_vec());
        for (i, tool) in tools.iter().enumerate() {
            if !available_tools.contains(tool) {
                errors.push(FieldError::new(
                    format!("tools[{i}]"),
                    format!(
                        "unknown tool {tool:?}; available: [{}]",
                        available_tools.join(", ")
                    ),
                ));
            } else if tools[..i].contains(tool) {
                errors.push(FieldError::new(
                    format!("tools[{i}]"),
                    format!("{tool:?} is listed twice"),
                ));
            }
        }
        if errors.is_empty() {
            Ok(ValidatedRun {
                messages: self.messages,
                model,
                tools,
                max_steps,
                react_mode: self.react_mode.unwrap_or(defaults.react_mode),
                max_tokens: self.max_tokens,
                max_cost_usd,
                approval_timeout_secs: self.approval_timeout,
                on_approval_timeout: self.on_approval_timeout.unwrap_or_default(),
                if_busy: self.if_busy.unwrap_or_default(),
                webhook_url: self.webhook_url.map(|url| url.trim().to_owned()),
            })
        } else {
            Err(errors)
        }
    }
}

/// System messages may only open the conversation; then user and assistant alternate, starting
/// and ending with the user.
fn validate_messages(messages: &[Message]) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if messages.is_empty() {
        errors.push(FieldError::new(
            "messages",
            "must contain at least one message",
        ));
        return errors;
    }
    let mut previous: Option<&str> = None;
    for (i, message) in messages.iter().enumerate() {
        let field = format!("messages[{i}]");
        let role = message.role.as_str();
        match role {
            "system" if previous.is_some_and(|p| p != "system") => errors.push(FieldError::new(
                format!("{field}.role"),
                "system messages are only allowed at the start",
            )),
            "system" => {}
            "user" | "assistant" => {
                let expected = match previous {
                    None | Some("system") => "user",
                    Some("user") => "assistant",
                    Some(_) => "user",
                };
                if role != expected {
                    errors.push(FieldError::new(
                        format!("{field}.role"),
                        format!(
                            "expected {expected:?}: roles must alternate, starting with \"user\""
                        ),
                    ));
                }
            }
            other => errors.push(FieldError::new(
                format!("{field}.role"),
                format!("unknown role {other:?}; expected \"system\", \"user\" or \"assistant\""),
            )),
        }
        if message.content.trim().is_empty() {
            errors.push(FieldError::new(
                format!("{field}.content"),
                "must not be empty",
            ));
        } else if message.content.contains('\0') {
            errors.push(FieldError::new(format!("{field}.content"), NUL_MESSAGE));
        }
        previous = Some(role);
    }
    if errors.is_empty() && previous != Some("user") {
        errors.push(FieldError::new(
            format!("messages[{}].role", messages.len() - 1),
            "the last message must come from the user",
        ));
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: &str, content: &str) -> Message {
        Message {
            role: role.into(),
            content: content.into(),
        }
    }

    /// The bounds the OpenAPI schema documents (literals, as utoipa wants them) are the ones
    /// `validate` enforces.
    #[test]
    fn documented_bounds_are_the_enforced_ones() {
        let schema = serde_json::to_value(<AgentRunRequest as utoipa::PartialSchema>::schema())
            .expect("schema serializes");
        let properties = &schema["properties"];
        assert_eq!(properties["max_steps"]["maximum"], MAX_STEPS_LIMIT);
        assert_eq!(properties["max_steps"]["minimum"], 1);
        assert_eq!(properties["model"]["maxLength"], MAX_MODEL_NAME);
        assert_eq!(properties["messages"]["minItems"], 1);
        let message = serde_json::to_value(<Message as utoipa::PartialSchema>::schema())
            .expect("schema serializes");
        let pattern = message["properties"]["content"]["pattern"]
            .as_str()
            .expect("content has a pattern");
        assert_eq!(pattern, r"^[^\u0000]*[^\s\u0000][^\u0000]*$");
        let at_limit = AgentRunRequest {
            messages: vec![msg("user", "hi")],
            model: Some("é".repeat(MAX_MODEL_NAME)),
            tools: None,
            max_steps: Some(MAX_STEPS_LIMIT),
            max_tokens: Some(1),
            max_cost_usd: None,
            react_mode: None,
            approval_timeout: None,
            on_approval_timeout: None,
            if_busy: None,
            webhook_url: None,
        };
        assert!(at_limit.clone().validate(&[], &defaults("m")).is_ok());
        let past = AgentRunRequest {
            model: Some("é".repeat(MAX_MODEL_NAME + 1)),
            max_steps: Some(MAX_STEPS_LIMIT + 1),
            ..at_limit
        };
        let errors = past
            .validate(&[], &defaults("m"))
            .expect_err("past the bounds");
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["model", "max_steps"]);
    }

    fn defaults(model: &str) -> RunDefaults {
        RunDefaults {
            model: model.into(),
            react_mode: ReactMode::Native,
        }
    }

    fn run(messages: Vec<Message>) -> AgentRunRequest {
        AgentRunRequest {
            messages,
            model: None,
            tools: None,
            max_steps: None,
            max_tokens: None,
            max_cost_usd: None,
            react_mode: None,
            approval_timeout: None,
            on_approval_timeout: None,
            if_busy: None,
            webhook_url: None,
        }
    }

    fn fields(request: AgentRunRequest) -> Vec<String> {
        match request.validate(&["echo".into()], &defaults("m")) {
            Ok(_) => vec![],
            Err(errors) => errors.into_iter().map(|e| e.field).collect(),
        }
    }

    #[test]
    fn defaults_are_filled_in() {
        let valid = run(vec![msg("system", "be brief"), msg("user", "hi")])
            .validate(&["echo".into()], &defaults("claude-sonnet-4-5"))
            .unwrap();
        assert_eq!(valid.model, "claude-sonnet-4-5");
        assert_eq!(valid.tools, vec!["echo".to_string()]);
        assert_eq!(valid.max_steps, DEFAULT_MAX_STEPS);
    }

    #[test]
    fn each_problem_names_its_field() {
        assert_eq!(fields(run(vec![])), vec!["messages"]);
        assert_eq!(
            fields(run(vec![msg("robot", "hi")])),
            vec!["messages[0].role"]
        );
        assert_eq!(
            fields(run(vec![msg("user", " ")])),
            vec!["messages[0].content"]
        );
        assert_eq!(
            fields(run(vec![msg("user", "a"), msg("user", "b")])),
            vec!["messages[1].role"]
        );
        assert_eq!(
            fields(run(vec![msg("assistant", "a")])),
            vec!["messages[0].role"]
        );
        assert_eq!(
            fields(run(vec![msg("user", "a"), msg("assistant", "b")])),
            vec!["messages[1].role"]
        );
        let mut bad = run(vec![msg("user", "a")]);
        bad.max_steps = Some(0);
        bad.tools = Some(vec!["echo".into(), "rm_rf".into()]);
        assert_eq!(fields(bad), vec!["max_steps", "tools[1]"]);
        let mut nul = run(vec![msg("user", "a\0b")]);
        nul.model = Some("m\0".into());
        assert_eq!(fields(nul), vec!["messages[0].content", "model"]);
        let mut too_many = run(vec![msg("user", "a")]);
        too_many.max_steps = Some(51);
        assert_eq!(fields(too_many), vec!["max_steps"]);
    }

    #[test]
    fn failure_codes_are_todays_strings() {
        for code in FailureCode::ALL {
            assert_eq!(FailureCode::parse(code.as_str()), code);
            assert_eq!(
                serde_json::to_value(code).unwrap(),
                serde_json::json!(code.as_str())
            );
        }
        let unknown: FailureCode = serde_json::from_str("\"from_the_future\"").unwrap();
        assert_eq!(unknown, FailureCode::Unknown);
    }

    #[test]
    fn status_round_trips_through_its_name() {
        for status in [
            SessionStatus::Queued,
            SessionStatus::Pending,
            SessionStatus::Running,
            SessionStatus::AwaitingApproval,
            SessionStatus::Completed,
            SessionStatus::Failed,
            SessionStatus::Cancelled,
        ] {
            assert_eq!(SessionStatus::parse(status.as_str()), Some(status));
            let json = serde_json::to_value(status).unwrap();
            assert_eq!(json, serde_json::json!(status.as_str()));
        }
    }
}
