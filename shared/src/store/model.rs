//! The store's domain types: what the API and the worker hand to the store and get back. None of
//! them names a database or a cache.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::schemas::{
    FailureCode, SessionError, SessionStatus, StepApproval, ToolCall, Usage, ValidatedRun,
    WebhookEventType,
};

/// Who is calling: the org that owns the key, and the key itself (for audit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal {
    pub org_id: Uuid,
    pub key_id: Uuid,
    /// The org's own API rate limit, when it has one (else the deployment's default).
    pub rate_limit: Option<RateLimit>,
    /// The org's own cap on active sessions, when it has one (else the deployment's default).
    pub active_cap: Option<ActiveCap>,
    /// When the key stops working, if it expires.
    pub expires_at: Option<DateTime<Utc>>,
}

/// How many sessions an org may have active (pending, running or awaiting approval) at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActiveCap {
    Unlimited,
    AtMost(u32),
}

impl ActiveCap {
    /// The org's column: NULL for the deployment's default, 0 for no cap, else the cap.
    pub fn from_column(max_active: Option<i64>) -> Option<Self> {
        match max_active? {
            0 => Some(Self::Unlimited),
            n => u32::try_from(n).ok().filter(|n| *n > 0).map(Self::AtMost),
        }
    }

    pub fn to_column(self) -> i64 {
        match self {
            Self::Unlimited => 0,
            Self::AtMost(n) => i64::from(n),
        }
    }

    /// The cap a create applies: `None` when there is none.
    pub fn limit(self) -> Option<u32> {
        match self {
            Self::Unlimited => None,
            Self::AtMost(n) => Some(n),
        }
    }
}

/// A key to make: its org (created if new), a name people know it by, and when it expires.
#[derive(Debug, Clone, Default)]
pub struct NewKey {
    pub org: String,
    pub name: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// A key as operators see it (never the key itself: only its first characters are kept).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyInfo {
    pub id: Uuid,
    pub name: Option<String>,
    /// The key's first characters, to recognise it.
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Requests per second and the burst allowed above that pace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_sec: u32,
    pub burst: u32,
}

impl RateLimit {
    /// Both columns set and positive, as the schema keeps them; anything else is "none".
    pub fn from_columns(per_sec: Option<i64>, burst: Option<i64>) -> Option<Self> {
        let per_sec = u32::try_from(per_sec?).ok().filter(|n| *n > 0)?;
        let burst = u32::try_from(burst?).ok().filter(|n| *n > 0)?;
        Some(Self { per_sec, burst })
    }
}

/// A session to create.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub id: Uuid,
    pub org_id: Uuid,
    pub run: ValidatedRun,
    pub deadline_at: DateTime<Utc>,
    pub idempotency: Option<IdempotencyKey>,
    pub created_at: DateTime<Utc>,
    /// The trace the session's steps join (W3C `traceparent`).
    pub traceparent: Option<String>,
    /// The most sessions its org may have active: over it the session is created `queued` (or,
    /// with `if_busy: reject`, not at all). `None`: no cap.
    pub max_active: Option<u32>,
}

impl NewSession {
    /// A session created now, due by `now + deadline`; times at the microsecond the database
    /// keeps, so the snapshot built from this equals what the database reads back.
    pub fn now(
        id: Uuid,
        org_id: Uuid,
        run: ValidatedRun,
        deadline: std::time::Duration,
        idempotency: Option<IdempotencyKey>,
    ) -> Self {
        let now = Utc::now();
        let micros =
            |t: DateTime<Utc>| DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t);
        let deadline = chrono::Duration::from_std(deadline).unwrap_or(chrono::Duration::MAX);
        Self {
            id,
            org_id,
            run,
            deadline_at: micros(now.checked_add_signed(deadline).unwrap_or(now)),
            idempotency,
            created_at: micros(now),
            traceparent: None,
            max_active: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    pub key: String,
    /// SHA-256 of the request as received (parsed and re-serialized, keys sorted).
    pub request_hash: String,
}

/// How `create_session` went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// Created `pending`: its first step can be queued.
    New,
    /// Created `queued`: its org has no free slot; it starts when one frees up.
    Queued,
    /// Not created: its org has no free slot and the request asked to be refused then.
    Busy,
    /// The key was used before with the same request: that session.
    Existing(Uuid),
    /// The key was used before with a different request.
    KeyReused,
}

/// A session's own fields (its steps and spend apart), as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub id: Uuid,
    pub org_id: Uuid,
    pub status: SessionStatus,
    pub run: ValidatedRun,
    /// The step a `StepJob` must carry to be the current one.
    pub next_step: u32,
    pub final_answer: Option<String>,
    pub error: Option<SessionError>,
    pub cancel_requested: bool,
    /// Bumped by every change a poll can see; a snapshot never replaces a newer one.
    pub version: i64,
    pub deadline_at: DateTime<Utc>,
    pub approval_expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl SessionRecord {
    /// Takes the session-level fields a transition returned.
    pub fn apply(&mut self, head: &Head) {
        self.status = head.status;
        self.next_step = head.next_step;
        self.final_answer = head.final_answer.clone();
        self.error = head.error.clone();
        self.cancel_requested = head.cancel_requested;
        self.version = head.version;
        self.approval_expires_at = head.approval_expires_at;
        self.updated_at = head.updated_at;
    }
}

/// The session-level fields after a transition: what the hot copy needs to catch up.
#[derive(Debug, Clone, PartialEq)]
pub struct Head {
    pub id: Uuid,
    pub status: SessionStatus,
    pub next_step: u32,
    pub final_answer: Option<String>,
    pub error: Option<SessionError>,
    pub cancel_requested: bool,
    pub version: i64,
    pub approval_expires_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

/// A queued session given a free slot of its org: now `pending`, its first step to be queued.
#[derive(Debug, Clone)]
pub struct Promoted {
    pub head: Head,
    pub org_id: Uuid,
    pub traceparent: Option<String>,
}

/// One step as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub index: u32,
    pub thought: Option<String>,
    /// The model's turn as replayed into later prompts (content blocks).
    pub llm_content: serde_json::Value,
    /// The tool calls, in order; empty for a final answer.
    pub actions: Vec<ToolCall>,
    pub is_final: bool,
    pub final_answer: Option<String>,
    /// Results of the calls that finished, in call order.
    pub observations: Vec<serde_json::Value>,
    /// How many calls have started (a started call without a result had its outcome lost).
    pub calls_started: u32,
    /// What the model answered when it was not what we asked for.
    pub invalid_output: Option<String>,
    /// What the approver was shown of each call, when the turn waited for approval.
    pub reviews: Option<serde_json::Value>,
    pub approval: Option<StepApproval>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl StepRecord {
    /// Every call has its result.
    pub fn acted(&self) -> bool {
        self.observations.len() >= self.actions.len()
    }

    /// A human rejected this step's calls that need approval.
    pub fn rejected(&self) -> bool {
        self.approval.as_ref().is_some_and(|a| !a.approved)
    }
}

/// What the model decided at a step.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub thought: Option<String>,
    pub llm_content: serde_json::Value,
    pub actions: Vec<ToolCall>,
    pub is_final: bool,
    pub final_answer: Option<String>,
    pub invalid_output: Option<String>,
    pub started_at: DateTime<Utc>,
}

/// What the LLM calls of one step cost, from the ledger.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Spend {
    pub calls: u32,
    pub usage: Usage,
    /// `None` once any call had no known price.
    pub cost_usd: Option<Decimal>,
}

impl Spend {
    pub fn add(&mut self, other: &Spend) {
        self.calls += other.calls;
        self.usage.add(other.usage);
        self.cost_usd = self.cost_usd.zip(other.cost_usd).map(|(a, b)| a + b);
    }

    /// What one call adds.
    pub fn of(call: &LlmCallRecord) -> Self {
        Self {
            calls: 1,
            usage: call.usage,
            cost_usd: call.cost_usd,
        }
    }

    pub fn zero() -> Self {
        Self {
            calls: 0,
            usage: Usage::default(),
            cost_usd: Some(Decimal::ZERO),
        }
    }
}

/// One LLM call for the cost ledger, billed or failed.
#[derive(Debug, Clone)]
pub struct LlmCallRecord {
    pub session_id: Uuid,
    pub step_index: u32,
    pub model: String,
    pub ok: bool,
    pub http_status: Option<u16>,
    pub usage: Usage,
    pub cost_usd: Option<Decimal>,
    pub duration_ms: u64,
    pub error: Option<String>,
}

/// A whole session as stored: its fields, its steps in order, and the spend of each step.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionState {
    pub record: SessionRecord,
    pub steps: Vec<StepRecord>,
    /// Per step index, what its LLM calls cost.
    pub spend: Vec<(u32, Spend)>,
}

impl SessionState {
    pub fn step(&self, index: u32) -> Option<&StepRecord> {
        self.steps.iter().find(|s| s.index == index)
    }

    pub fn step_mut(&mut self, index: u32) -> Option<&mut StepRecord> {
        self.steps.iter_mut().find(|s| s.index == index)
    }

    /// The steps before `index`: the history a prompt is built from.
    pub fn history(&self, index: u32) -> impl Iterator<Item = &StepRecord> {
        self.steps.iter().filter(move |s| s.index < index)
    }

    pub fn spend_of(&self, index: u32) -> Spend {
        self.spend
            .iter()
            .find(|(i, _)| *i == index)
            .map_or_else(Spend::zero, |(_, s)| *s)
    }

    /// Everything the session has spent.
    pub fn total_spend(&self) -> Spend {
        let mut total = Spend::zero();
        for (_, spend) in &self.spend {
            total.add(spend);
        }
        total
    }

    /// Sets the spend of step `index` to what the ledger returned.
    pub fn set_spend(&mut self, index: u32, spend: Spend) {
        match self.spend.iter_mut().find(|(i, _)| *i == index) {
            Some((_, s)) => *s = spend,
            None => self.spend.push((index, spend)),
        }
    }
}

/// Proof of holding a session's lease; every step write carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub session_id: Uuid,
    pub owner: String,
    pub fence: i64,
    /// Which delivery of the session's current step this is (1 for the first to take the lease).
    pub attempt: u32,
}

/// How an attempt to begin step n went.
#[derive(Debug)]
pub enum Begin {
    /// The lease is taken; the whole session is in hand.
    Leased(Box<StepRun>),
    /// No such session.
    Missing,
    /// Finished, or waiting for a human: nothing to do.
    Idle(SessionStatus),
    /// Step n is not the session's current step.
    NotCurrent { next_step: u32 },
    /// Another worker holds a live lease.
    Held,
}

/// A step in progress: the lease and the session as the worker sees it, kept current by every
/// transition the worker makes through the store (which writes the hot copy from it).
#[derive(Debug, Clone)]
pub struct StepRun {
    pub lease: Lease,
    pub step: u32,
    pub state: SessionState,
    /// Taking the lease moved the session from `pending` to `running`.
    pub became_running: bool,
    /// The session's trace, which the next step's job carries on.
    pub traceparent: Option<String>,
}

impl StepRun {
    pub fn session_id(&self) -> Uuid {
        self.lease.session_id
    }

    /// The step being run, once decided.
    pub fn current(&self) -> Option<&StepRecord> {
        self.state.step(self.step)
    }

    /// The step has advanced (its last result was recorded with the advance).
    pub fn advanced(&self) -> bool {
        self.state.record.next_step > self.step
    }
}

/// How a session ends.
#[derive(Debug, Clone, PartialEq)]
pub enum Ending {
    Completed { final_answer: String },
    Failed { code: FailureCode, message: String },
    Cancelled,
}

impl Ending {
    pub fn failed(code: FailureCode, message: impl Into<String>) -> Self {
        Self::Failed {
            code,
            message: message.into(),
        }
    }

    pub fn status(&self) -> SessionStatus {
        match self {
            Self::Completed { .. } => SessionStatus::Completed,
            Self::Failed { .. } => SessionStatus::Failed,
            Self::Cancelled => SessionStatus::Cancelled,
        }
    }
}

/// How a cancel request went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The flag is set (now or before); the worker stops the session at its next check.
    Requested,
    /// No worker was running it: the session is cancelled now.
    Cancelled,
    AlreadyFinished(SessionStatus),
    NotFound,
}

/// How an approval decision went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApprovalOutcome {
    /// Recorded; the step must be enqueued again to act on it (joining the session's trace).
    Recorded {
        traceparent: Option<String>,
    },
    NotFound,
    /// Not awaiting approval of that step (the message says what it is doing).
    Conflict(String),
    /// The approval window closed; the session has failed `approval_expired`.
    Expired,
}

/// A human's decision on a step awaiting approval.
#[derive(Debug, Clone)]
pub struct ApprovalDecision {
    pub session_id: Uuid,
    pub step: u32,
    /// The org the session must belong to.
    pub org_id: Uuid,
    /// The key of the human who decided; `None` for the session's `on_approval_timeout`.
    pub decided_by: Option<Uuid>,
    /// The session's `on_approval_timeout` applied after the window closed (taken only then;
    /// a human's decision is taken only before).
    pub on_timeout: bool,
    pub approved: bool,
    pub reason: Option<String>,
}

/// A held turn whose approval window closed undecided, with what its session asked for then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LapsedApproval {
    pub session_id: Uuid,
    pub org_id: Uuid,
    pub step: u32,
    pub on_timeout: crate::schemas::OnApprovalTimeout,
}

/// What a decision may do, given whether the session's approval window has closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Window {
    /// Record it.
    Take,
    /// Refuse it with this outcome, changing nothing.
    Refuse(ApprovalOutcome),
    /// Too late for a human, and the run asked to fail then: end the session `approval_expired`.
    Expire,
}

impl ApprovalDecision {
    /// A human's decision is taken only while the window is open; the run's
    /// `on_approval_timeout` (`on_timeout`, as stored) only after it closed. A human too late
    /// fails the session when the run chose `fail`, and otherwise leaves it to the reconciler.
    pub fn window(&self, expired: bool, on_timeout: &str) -> Window {
        match (self.on_timeout, expired) {
            (false, false) | (true, true) => Window::Take,
            (true, false) => Window::Refuse(ApprovalOutcome::Conflict(
                "the approval window is still open".into(),
            )),
            (false, true)
                if crate::schemas::OnApprovalTimeout::parse(on_timeout)
                    .is_some_and(|c| c != crate::schemas::OnApprovalTimeout::Fail) =>
            {
                Window::Refuse(ApprovalOutcome::Expired)
            }
            (false, true) => Window::Expire,
        }
    }
}

impl LapsedApproval {
    /// From a store's row; `None` for a step or a choice no session can hold.
    pub fn from_columns(
        session_id: Uuid,
        org_id: Uuid,
        step: i64,
        on_timeout: &str,
    ) -> Option<Self> {
        Some(Self {
            session_id,
            org_id,
            step: u32::try_from(step).ok()?,
            on_timeout: crate::schemas::OnApprovalTimeout::parse(on_timeout)?,
        })
    }
}

/// What the store holds, counted (for operators, metrics and benchmarks).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub sessions_by_status: Vec<(SessionStatus, u64)>,
    /// Steps whose decision is stored.
    pub steps: u64,
    /// Steps that are done (every call has its result, or the step was final).
    pub steps_finished: u64,
}

impl Summary {
    pub fn sessions(&self, status: SessionStatus) -> u64 {
        self.sessions_by_status
            .iter()
            .find(|(s, _)| *s == status)
            .map_or(0, |(_, n)| *n)
    }

    /// Sessions that ended, whatever the way.
    pub fn finished(&self) -> u64 {
        SessionStatus::TERMINAL
            .iter()
            .map(|s| self.sessions(*s))
            .sum()
    }
}

/// A page of an org's sessions, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    pub org_id: Uuid,
    pub status: Option<SessionStatus>,
    pub limit: u32,
    /// The page starts after this session (its creation time and id).
    pub after: Option<(DateTime<Utc>, Uuid)>,
}

/// A stalled session claimed for re-enqueueing; `fence` makes the repair's job id unique.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repair {
    pub session_id: Uuid,
    pub next_step: u32,
    pub fence: i64,
    pub traceparent: Option<String>,
}

#[cfg(test)]
mod window_tests {
    use super::*;

    fn decision(on_timeout: bool) -> ApprovalDecision {
        ApprovalDecision {
            session_id: Uuid::now_v7(),
            step: 0,
            org_id: Uuid::now_v7(),
            decided_by: None,
            on_timeout,
            approved: true,
            reason: None,
        }
    }

    #[test]
    fn humans_decide_before_the_window_closes_and_the_run_after() {
        let (human, deadline) = (decision(false), decision(true));
        assert_eq!(human.window(false, "fail"), Window::Take);
        assert_eq!(deadline.window(true, "approve"), Window::Take);
        assert!(matches!(
            deadline.window(false, "approve"),
            Window::Refuse(ApprovalOutcome::Conflict(_))
        ));
        assert_eq!(human.window(true, "fail"), Window::Expire);
        for choice in ["reject", "approve"] {
            assert_eq!(
                human.window(true, choice),
                Window::Refuse(ApprovalOutcome::Expired),
                "{choice}"
            );
        }
    }
}

/// An org's webhook settings, as `agentq admin webhook` shows them. (`Debug` leaves the secret
/// out, as every type here that holds it does: it must never reach a log.)
#[derive(Clone, PartialEq, Eq)]
pub struct OrgWebhook {
    /// Where the org's sessions' events go when their run names no URL.
    pub url: Option<String>,
    /// What every message to the org's sessions' URLs is signed with (`whsec_...`).
    pub secret: String,
}

/// A change to an org's webhook settings. The secret is made (from `new_secret`) when the org
/// has none yet, or replaced with it on `rotate`.
#[derive(Clone)]
pub struct OrgWebhookChange {
    /// `None`: keep the URL; `Some(None)`: clear it; `Some(Some(url))`: set it (checked first).
    pub url: Option<Option<String>>,
    pub new_secret: String,
    pub rotate: bool,
}

/// A webhook message claimed for one attempt.
#[derive(Clone, PartialEq)]
pub struct WebhookDue {
    pub session_id: Uuid,
    pub event_seq: i64,
    pub event_type: WebhookEventType,
    pub org_id: Uuid,
    pub url: String,
    /// This attempt's number: 1 for the first.
    pub attempt: u32,
    /// The body an earlier attempt fixed, which every later one sends again.
    pub payload: Option<serde_json::Value>,
    /// The org's signing secret, once it has one.
    pub secret: Option<String>,
}

const REDACTED: &str = "<redacted>";

impl std::fmt::Debug for OrgWebhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrgWebhook")
            .field("url", &self.url)
            .field("secret", &REDACTED)
            .finish()
    }
}

impl std::fmt::Debug for OrgWebhookChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrgWebhookChange")
            .field("url", &self.url)
            .field("new_secret", &REDACTED)
            .field("rotate", &self.rotate)
            .finish()
    }
}

impl std::fmt::Debug for WebhookDue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookDue")
            .field("session_id", &self.session_id)
            .field("event_seq", &self.event_seq)
            .field("event_type", &self.event_type)
            .field("org_id", &self.org_id)
            .field("url", &self.url)
            .field("attempt", &self.attempt)
            .field("payload", &self.payload)
            .field("secret", &self.secret.as_ref().map(|_| REDACTED))
            .finish()
    }
}

impl WebhookDue {
    /// The message's `webhook-id`.
    pub fn message_id(&self) -> String {
        crate::webhooks::message_id(self.session_id, self.event_seq)
    }
}

/// What one attempt came to and what becomes of the delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookAttemptRecord {
    pub session_id: Uuid,
    pub event_seq: i64,
    pub attempt: u32,
    pub at: DateTime<Utc>,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: u64,
    pub next: WebhookNext,
}

/// What follows an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookNext {
    Delivered,
    RetryAt(DateTime<Utc>),
    Failed,
}
