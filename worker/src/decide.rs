//! Decide (step protocol, 4): ask the model for step n and store what it chose, once.
//!
//! Output that is not what we asked for (an empty turn, invalid JSON in JSON mode, a turn cut at
//! max_tokens) gets one repair turn quoting the problem; if the repair fails too, the raw text is
//! kept on the step and the session fails with a machine-readable code. A refusal is not
//! repaired. Budgets (`max_tokens`, `max_cost_usd`) are checked before every call, from the ledger.

use agentq_shared::schemas::{ReactMode, SessionError, SessionStatus};
use agentq_shared::store::{Decision, Lease, SessionRow, StepRow};
use chrono::Utc;
use serde_json::{Value, json};

use crate::Context;
use crate::guard::guarded;
use crate::llm::{LlmRequest, LlmResponse};
use crate::llm_call::{self, LlmOutcome};
use crate::prompt::{self, PromptSettings, Turn, Unusable};
use crate::step::{Stop, end};

pub async fn decide(
    ctx: &Context,
    session: &SessionRow,
    lease: &Lease,
    n: u32,
) -> anyhow::Result<Result<StepRow, Stop>> {
    let id = session.id;
    let started_at = Utc::now();
    let history = ctx.store.steps_before(id, n).await?;
    let tools: Vec<_> = session
        .run
        .tools
        .iter()
        .filter_map(|t| ctx.tools.get(t))
        .collect();
    let settings = PromptSettings {
        max_tokens: ctx.config.llm.max_tokens,
        observation_chars: ctx.config.llm.observation_chars,
    };
    let mut request = prompt::build(&session.run, &history, &tools, &settings);
    let mut unusable_outputs = Vec::new();
    for attempt in 0..2 {
        if let Some(message) = over_budget(ctx, session).await? {
            fail(ctx, lease, "budget_exceeded", message).await?;
            return Ok(Err(Stop::Done));
        }
        let response = match guarded(
            ctx,
            lease,
            session.deadline_at,
            llm_call::call(ctx, id, n, &request),
        )
        .await
        {
            Err(interrupt) => {
                llm_call::record_abandoned(ctx, id, n, &request.model, interrupt).await?;
                return Ok(Err(Stop::Interrupted(interrupt)));
            }
            Ok(outcome) => match outcome? {
                LlmOutcome::Answered(response) => response,
                LlmOutcome::Failed { code, message } => {
                    fail(ctx, lease, code, message).await?;
                    return Ok(Err(Stop::Done));
                }
            },
        };
        let raw = raw_text(&response);
        let stop_reason = response.stop_reason.as_deref();
        let parsed = match session.run.react_mode {
            ReactMode::Native => prompt::parse_native(&response.content, stop_reason),
            ReactMode::Json => prompt::parse_json(&raw, stop_reason),
        };
        let problem = match parsed {
            Ok(turn) => {
                let invalid_output =
                    (!unusable_outputs.is_empty()).then(|| unusable_outputs.join("\n---\n"));
                let decision = decision(
                    session.run.react_mode,
                    &response,
                    turn,
                    invalid_output,
                    started_at,
                );
                let stored = ctx.store.insert_decision(lease, n, &decision).await?;
                ctx.store.refresh_snapshot(id).await?;
                return Ok(Ok(stored));
            }
            Err(problem) => problem,
        };
        unusable_outputs.push(raw.clone());
        let (code, message) = match &problem {
            Unusable::Refused(text) => ("refusal", format!("the model refused: {text}")),
            Unusable::Truncated => (
                "max_tokens",
                format!(
                    "the model's answer was cut at max_tokens ({})",
                    settings.max_tokens
                ),
            ),
            Unusable::Invalid(why) => (
                "invalid_model_output",
                format!("the model's answer could not be used: {why}"),
            ),
        };
        if attempt == 1 || matches!(problem, Unusable::Refused(_)) {
            let failed = Decision {
                thought: None,
                llm_content: json!(response.content),
                actions: Vec::new(),
                is_final: true,
                final_answer: None,
                invalid_output: Some(unusable_outputs.join("\n---\n")),
                started_at,
            };
            ctx.store.insert_decision(lease, n, &failed).await?;
            fail(ctx, lease, code, message).await?;
            return Ok(Err(Stop::Done));
        }
        tracing::warn!(%message, "unusable model output; asking once more");
        repair(
            &mut request,
            &response,
            &raw,
            &problem,
            session.run.react_mode,
            settings.max_tokens,
        );
    }
    unreachable!("the loop returns on its second attempt")
}

/// The text of a turn, or the whole content when it has no text (kept for the record).
fn raw_text(response: &LlmResponse) -> String {
    let text = prompt::content_text(&json!(response.content));
    if text.trim().is_empty() {
        json!(response.content).to_string()
    } else {
        text
    }
}

fn decision(
    mode: ReactMode,
    response: &LlmResponse,
    turn: Turn,
    invalid_output: Option<String>,
    started_at: chrono::DateTime<Utc>,
) -> Decision {
    let llm_content = match mode {
        ReactMode::Native => json!(response.content),
        // JSON mode replays the answer as text.
        ReactMode::Json => {
            json!([{"type": "text", "text": prompt::content_text(&json!(response.content))}])
        }
    };
    Decision {
        is_final: turn.calls.is_empty(),
        thought: turn.thought,
        llm_content,
        actions: turn.calls,
        final_answer: turn.final_answer,
        invalid_output,
        started_at,
    }
}

/// Adds the unusable turn and a user message saying what was wrong.
fn repair(
    request: &mut LlmRequest,
    response: &LlmResponse,
    raw: &str,
    problem: &Unusable,
    mode: ReactMode,
    max_tokens: u32,
) {
    let why = match problem {
        Unusable::Truncated => format!(
            "it was cut off at the output limit ({max_tokens} tokens); answer again, more briefly"
        ),
        Unusable::Invalid(why) | Unusable::Refused(why) => why.clone(),
    };
    let mut message = format!("Your previous reply could not be used: {why}.");
    if mode == ReactMode::Json {
        message.push(' ');
        message.push_str(prompt::JSON_FORMAT_REMINDER);
    }
    let text = prompt::content_text(&json!(response.content));
    if !text.trim().is_empty() {
        // Only the text: a cut-off tool_use would need a tool_result.
        let shown = if mode == ReactMode::Json {
            raw.to_owned()
        } else {
            text
        };
        request
            .messages
            .push(json!({"role": "assistant", "content": shown}));
        request
            .messages
            .push(json!({"role": "user", "content": message}));
        return;
    }
    // Nothing to show as the assistant's turn: the note joins the last user message.
    if let Some(last) = request.messages.last_mut() {
        let blocks = match last["content"].take() {
            Value::String(s) => vec![json!({"type": "text", "text": s})],
            Value::Array(blocks) => blocks,
            other => vec![json!({"type": "text", "text": other.to_string()})],
        };
        let mut blocks = blocks;
        blocks.push(json!({"type": "text", "text": message}));
        last["content"] = Value::Array(blocks);
    }
}

/// A message when the session has spent its token or cost budget.
pub async fn over_budget(ctx: &Context, session: &SessionRow) -> anyhow::Result<Option<String>> {
    let run = &session.run;
    if run.max_tokens.is_none() && run.max_cost_usd.is_none() {
        return Ok(None);
    }
    let (usage, cost) = ctx.store.spent(session.id).await?;
    if let Some(max) = run.max_tokens
        && usage.total() >= max
    {
        return Ok(Some(format!(
            "the session used {} tokens; its budget is {max}",
            usage.total()
        )));
    }
    match (run.max_cost_usd, cost) {
        (Some(max), Some(cost)) if cost >= max => Ok(Some(format!(
            "the session cost ${}; its budget is ${max}",
            cost.normalize()
        ))),
        (Some(_), None) => {
            tracing::warn!(model = %run.model, "max_cost_usd can't be enforced: the model has no price");
            Ok(None)
        }
        _ => Ok(None),
    }
}

pub async fn fail(ctx: &Context, lease: &Lease, code: &str, message: String) -> anyhow::Result<()> {
    let error = SessionError {
        code: code.to_owned(),
        message,
    };
    end(ctx, lease, SessionStatus::Failed, None, Some(&error)).await
}
