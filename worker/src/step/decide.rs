//! Decide (step protocol, 4): ask the model for step n and store what it chose, once.
//!
//! Output that is not what we asked for (an empty turn, invalid JSON in JSON mode, a turn cut at
//! max_tokens) gets one repair turn quoting the problem; if the repair fails too, the raw text is
//! kept on the step and the session fails with a machine-readable code. A refusal is not
//! repaired. Budgets (`max_tokens`, `max_cost_usd`) are checked before every call.

use agentq_shared::schemas::{FailureCode, ReactMode};
use agentq_shared::store::{Decision, Ending, StepRun};
use chrono::Utc;
use serde_json::{Value, json};

use super::budget::over_budget;
use super::end::{Concluded, Finish};
use super::guard::{Interrupt, guarded};
use super::llm_call::{self, LlmOutcome};
use crate::Context;
use crate::llm::{LlmRequest, LlmResponse};
use crate::prompt::{self, PromptSettings, Turn, Unusable};

/// What deciding came to.
pub enum Decided {
    /// A decision with tool calls is stored; whether a cancel is known since.
    Stored {
        cancel_seen: bool,
    },
    /// The session ends (a final answer, a failure); `end.rs` stores it.
    Finished(Finish),
    Interrupted(Interrupt),
}

pub async fn decide(ctx: &Context, run: &mut StepRun) -> anyhow::Result<Decided> {
    let started_at = Utc::now();
    let record = &run.state.record;
    let tools: Vec<_> = record
        .run
        .tools
        .iter()
        .filter_map(|t| ctx.tools.get(t))
        .collect();
    let settings = PromptSettings {
        max_tokens: ctx.config.llm.max_tokens,
        observation_chars: ctx.config.llm.observation_chars,
    };
    let history: Vec<_> = run.state.history(run.step).collect();
    let mut request = prompt::build(&record.run, &history, &tools, &settings);
    let mode = record.run.react_mode;
    let deadline = record.deadline_at;
    let lease = run.lease.clone();
    let mut unusable_outputs = Vec::new();
    for attempt in 0..2 {
        if let Some(message) = over_budget(run) {
            let ending = Ending::failed(FailureCode::BudgetExceeded, message);
            return Ok(Decided::Finished(Finish::Ending(ending)));
        }
        let called = guarded(ctx, &lease, deadline, llm_call::call(ctx, run, &request)).await;
        let (response, call) = match called {
            Err(interrupt) => {
                llm_call::record_abandoned(ctx, run, &request.model, interrupt).await?;
                return Ok(Decided::Interrupted(interrupt));
            }
            Ok(outcome) => match outcome? {
                LlmOutcome::Answered(answer) => (answer.response, answer.call),
                LlmOutcome::Failed { code, message } => {
                    let ending = Ending::failed(code, message);
                    return Ok(Decided::Finished(Finish::Ending(ending)));
                }
            },
        };
        let raw = raw_text(&response);
        let stop_reason = response.stop_reason.as_deref();
        let parsed = match mode {
            ReactMode::Native => prompt::parse_native(&response.content, stop_reason),
            ReactMode::Json => prompt::parse_json(&raw, stop_reason),
        };
        let problem = match parsed {
            Ok(turn) => {
                let invalid_output =
                    (!unusable_outputs.is_empty()).then(|| unusable_outputs.join("\n---\n"));
                let decision = decision(mode, &response, turn, invalid_output, started_at);
                if decision.is_final {
                    let final_answer = decision.final_answer.clone().unwrap_or_default();
                    return Ok(Decided::Finished(Finish::Decided(Box::new(Concluded {
                        call: Some(call),
                        decision,
                        ending: Ending::Completed { final_answer },
                    }))));
                }
                let cancel_seen = ctx
                    .store
                    .record_decision(run, Some(&call), &decision, None)
                    .await?;
                return Ok(Decided::Stored { cancel_seen });
            }
            Err(problem) => problem,
        };
        unusable_outputs.push(raw.clone());
        let (code, message) = match &problem {
            Unusable::Refused(text) => (FailureCode::Refusal, format!("the model refused: {text}")),
            Unusable::Truncated => (
                FailureCode::MaxTokens,
                format!(
                    "the model's answer was cut at max_tokens ({})",
                    settings.max_tokens
                ),
            ),
            Unusable::Invalid(why) => (
                FailureCode::InvalidModelOutput,
                format!("the model's answer could not be used: {why}"),
            ),
        };
        if attempt == 1 || matches!(problem, Unusable::Refused(_)) {
            // The unusable output is kept on the step, with the failure, in one write.
            let failed = Decision {
                thought: None,
                llm_content: json!(response.content),
                actions: Vec::new(),
                is_final: true,
                final_answer: None,
                invalid_output: Some(unusable_outputs.join("\n---\n")),
                started_at,
            };
            return Ok(Decided::Finished(Finish::Decided(Box::new(Concluded {
                call: Some(call),
                decision: failed,
                ending: Ending::failed(code, message),
            }))));
        }
        ctx.store.record_llm_call(run, &call).await?;
        tracing::warn!(%message, "unusable model output; asking once more");
        repair(
            &mut request,
            &response,
            &raw,
            &problem,
            mode,
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
