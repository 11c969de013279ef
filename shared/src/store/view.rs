//! The session as clients see it (`AgentSession`), built from what the store holds. The same
//! function serves a poll from Postgres and the hot copy a transition writes from the state in
//! hand, so both always show the same thing.

use chrono::{DateTime, Utc};

use super::model::{Head, SessionState, Spend, StepRecord};
use crate::schemas::{
    AgentSession, AgentStep, CallReview, PendingApproval, PendingCall, SessionStatus, ToolCall,
    Totals,
};

pub fn session(state: &SessionState) -> AgentSession {
    let record = &state.record;
    let steps: Vec<AgentStep> = state
        .steps
        .iter()
        .map(|s| step(s, state.spend_of(s.index)))
        .collect();
    let total = state.total_spend();
    let pending_approval = match (record.status, record.approval_expires_at) {
        (SessionStatus::AwaitingApproval, Some(expires_at)) => state
            .step(record.next_step)
            .and_then(|s| pending(s, expires_at)),
        _ => None,
    };
    AgentSession {
        session_id: record.id,
        org_id: record.org_id,
        status: record.status,
        model: record.run.model.clone(),
        cancel_requested: record.cancel_requested,
        totals: totals(steps.len(), &total),
        steps,
        final_answer: record.final_answer.clone(),
        error: record.error.clone(),
        pending_approval,
        deadline_at: record.deadline_at,
        created_at: record.created_at,
        updated_at: record.updated_at,
        version: record.version,
    }
}

/// A snapshot brought up to a transition that only changed the session's own fields (a cancel,
/// an approval, an expiry), without reading the steps again.
pub fn apply_head(session: &mut AgentSession, head: &Head) {
    session.status = head.status;
    session.final_answer = head.final_answer.clone();
    session.error = head.error.clone();
    session.cancel_requested = head.cancel_requested;
    session.version = head.version;
    session.updated_at = head.updated_at;
    if head.status != SessionStatus::AwaitingApproval {
        session.pending_approval = None;
    }
}

/// A session's totals from its step count and what it spent.
pub fn totals(steps: usize, total: &Spend) -> Totals {
    Totals {
        steps: steps as u32,
        input_tokens: total.usage.input_tokens,
        output_tokens: total.usage.output_tokens,
        cache_read_tokens: total.usage.cache_read_tokens,
        cache_write_tokens: total.usage.cache_write_tokens,
        cost_usd: total.cost_usd.map(|c| c.normalize()),
        llm_calls: total.calls,
    }
}

pub fn step(s: &StepRecord, spend: Spend) -> AgentStep {
    AgentStep {
        index: s.index,
        thought: s.thought.clone(),
        action: s.actions.first().cloned(),
        observation: s.observations.first().cloned(),
        // Listed only when the model made several calls in one turn.
        actions: if s.actions.len() > 1 {
            s.actions.clone()
        } else {
            Vec::new()
        },
        observations: if s.observations.len() > 1 {
            s.observations.clone()
        } else {
            Vec::new()
        },
        invalid_output: s.invalid_output.clone(),
        is_final: s.is_final,
        final_answer: s.final_answer.clone(),
        usage: spend.usage,
        cost_usd: spend.cost_usd,
        approval: s.approval.clone(),
        started_at: s.started_at,
        finished_at: s.finished_at,
    }
}

/// The turn a session waits on: every call, with what the worker stored about each when it held
/// the turn for approval (one `CallReview` per call; a single object in rows written before
/// calls were listed, which then describes the first call).
fn pending(step: &StepRecord, expires_at: DateTime<Utc>) -> Option<PendingApproval> {
    pending_calls(step.index, &step.actions, step.reviews.as_ref(), expires_at)
}

pub fn pending_calls(
    step: u32,
    actions: &[ToolCall],
    reviews: Option<&serde_json::Value>,
    expires_at: DateTime<Utc>,
) -> Option<PendingApproval> {
    let reviews: Vec<CallReview> = match reviews {
        Some(serde_json::Value::Array(_)) => reviews
            .and_then(|r| serde_json::from_value(r.clone()).ok())
            .unwrap_or_default(),
        legacy => vec![CallReview {
            id: None,
            requires_approval: true,
            details: legacy.cloned(),
        }],
    };
    let calls: Vec<PendingCall> = actions
        .iter()
        .enumerate()
        .map(|(i, call)| {
            let review = reviews.get(i);
            PendingCall {
                call: i as u32,
                id: review.and_then(|r| r.id.clone()),
                tool: call.tool.clone(),
                args: call.args.clone(),
                requires_approval: review.is_none_or(|r| r.requires_approval),
                details: review.and_then(|r| r.details.clone()),
            }
        })
        .collect();
    let first = calls
        .iter()
        .find(|c| c.requires_approval)
        .or(calls.first())?;
    Some(PendingApproval {
        step,
        tool: first.tool.clone(),
        args: first.args.clone(),
        details: first.details.clone(),
        calls: calls.clone(),
        expires_at,
    })
}
