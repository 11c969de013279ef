//! Builds the LLM conversation for step n from what Postgres holds, and reads the model's turn.
//! The prompt is a pure function of stored state, so any worker can rebuild it after a crash.
//!
//! Two ReAct modes: `native` uses the provider's tool use (`tools`, `tool_use`/`tool_result`
//! blocks); `json` describes the tools in the system prompt and expects one JSON object per turn.
//! Long observations are clipped in the prompt (the step keeps the full text).

use agentq_shared::schemas::{ReactMode, Role, ToolCall, ValidatedRun};
use agentq_shared::store::StepRecord;
use agentq_shared::tools::ToolDefinition;
use serde_json::{Value, json};

use crate::llm::LlmRequest;

const AGENT_PROMPT: &str = "You are an agent run by agentq. Work step by step: when a tool would \
help, call it; when you can answer, answer in plain text without calling a tool.";

const JSON_PROMPT: &str = "You are an agent run by agentq. Work step by step. Answer every turn \
with exactly one JSON object and nothing else:\n\
{\"thought\": string, \"action\": {\"tool\": string, \"args\": object} or null, \
\"is_final\": boolean, \"final_answer\": string or null}\n\
To use a tool, set action and is_final false; the tool's result comes back as an observation. \
When you can answer, set action null, is_final true and final_answer. The tools:";

pub const JSON_FORMAT_REMINDER: &str = "Reply with only one JSON object: {\"thought\": string, \
\"action\": {\"tool\": string, \"args\": object} or null, \"is_final\": boolean, \
\"final_answer\": string or null}.";

pub struct PromptSettings {
    pub max_tokens: u32,
    /// Characters of one observation shown to the model.
    pub observation_chars: usize,
}

pub fn build(
    run: &ValidatedRun,
    history: &[&StepRecord],
    tools: &[&ToolDefinition],
    settings: &PromptSettings,
) -> LlmRequest {
    let json_mode = run.react_mode == ReactMode::Json;
    let mut system = vec![if json_mode {
        json_system(tools)
    } else {
        AGENT_PROMPT.to_owned()
    }];
    let mut messages = Vec::new();
    for message in &run.messages {
        match message.role() {
            Role::System => system.push(message.content.clone()),
            Role::User => messages.push(json!({"role": "user", "content": message.content})),
            Role::Assistant => {
                messages.push(json!({"role": "assistant", "content": message.content}))
            }
        }
    }
    for row in history {
        if json_mode {
            messages.push(json!({"role": "assistant", "content": content_text(&row.llm_content)}));
            let observed: Vec<String> = row
                .observations
                .iter()
                .map(|o| observation_text(o, settings))
                .collect();
            messages.push(
                json!({"role": "user", "content": format!("Observation: {}", observed.join("\n"))}),
            );
        } else {
            messages.push(json!({"role": "assistant", "content": row.llm_content}));
            let results = tool_results(row, settings);
            if !results.is_empty() {
                messages.push(json!({"role": "user", "content": results}));
            }
        }
    }
    LlmRequest {
        model: run.model.clone(),
        system: Some(system.join("\n\n")),
        messages,
        tools: if json_mode {
            Vec::new()
        } else {
            tools.iter().map(|t| t.to_anthropic()).collect()
        },
        max_tokens: settings.max_tokens,
    }
}

fn json_system(tools: &[&ToolDefinition]) -> String {
    let listed: Vec<String> = tools
        .iter()
        .map(|t| {
            format!(
                "- {}: {} Arguments (JSON Schema): {}",
                t.name, t.description, t.parameters
            )
        })
        .collect();
    let listed = if listed.is_empty() {
        "(none)".to_owned()
    } else {
        listed.join("\n")
    };
    format!("{JSON_PROMPT}\n{listed}")
}

/// One `tool_result` per `tool_use` block of the step, in order, each with its call's result.
fn tool_results(row: &StepRecord, settings: &PromptSettings) -> Vec<Value> {
    tool_use_ids(&row.llm_content)
        .into_iter()
        .enumerate()
        .map(|(i, id)| match row.observations.get(i) {
            Some(observation) => json!({
                "type": "tool_result",
                "tool_use_id": id,
                "content": observation_text(observation, settings),
                "is_error": observation.get("success") == Some(&Value::Bool(false)),
            }),
            None => json!({
                "type": "tool_result",
                "tool_use_id": id,
                "content": "Not run.",
                "is_error": true,
            }),
        })
        .collect()
}

/// The ids of a turn's `tool_use` blocks, in order.
pub fn tool_use_ids(content: &Value) -> Vec<String> {
    content
        .as_array()
        .into_iter()
        .flatten()
        .filter(|block| block["type"] == "tool_use")
        .filter_map(|block| block["id"].as_str().map(str::to_owned))
        .collect()
}

/// The text blocks of a turn, joined.
pub fn content_text(content: &Value) -> String {
    let texts: Vec<&str> = content
        .as_array()
        .into_iter()
        .flatten()
        .filter(|block| block["type"] == "text")
        .filter_map(|block| block["text"].as_str())
        .collect();
    texts.join("\n")
}

/// A tool result as the model reads it: the result (or error) as text, clipped.
fn observation_text(observation: &Value, settings: &PromptSettings) -> String {
    let shown = match (observation.get("result"), observation.get("error")) {
        (_, Some(Value::String(error))) => json!({"error": error}),
        (Some(result), _) => result.clone(),
        _ => observation.clone(),
    };
    match shown {
        Value::String(text) => clip(&text, settings.observation_chars),
        other => clip_json(other, settings.observation_chars),
    }
}

const CLOSE_UNTRUSTED: &str = "</untrusted_web_content>";
const OPEN_UNTRUSTED: &str = "<untrusted_web_content";

/// A JSON result within `limit` characters: its longest strings are clipped (each keeping the
/// close of an untrusted-content block it opened), so every field, the closing marker and the
/// notice after the body stay readable.
fn clip_json(value: Value, limit: usize) -> String {
    let whole = value.to_string();
    if whole.chars().count() <= limit {
        return whole;
    }
    let longest = longest_string(&value);
    // The largest per-string cap that fits; a cap of 0 that still does not fit falls back to
    // clipping the text.
    let (mut low, mut high) = (0, longest);
    let mut best = None;
    while low <= high {
        let cap = (low + high) / 2;
        let text = with_strings_clipped(&value, cap).to_string();
        if text.chars().count() <= limit {
            best = Some(text);
            low = cap + 1;
        } else if cap == 0 {
            break;
        } else {
            high = cap - 1;
        }
    }
    best.unwrap_or_else(|| clip(&whole, limit))
}

fn longest_string(value: &Value) -> usize {
    match value {
        Value::String(s) => s.chars().count(),
        Value::Array(items) => items.iter().map(longest_string).max().unwrap_or(0),
        Value::Object(map) => map.values().map(longest_string).max().unwrap_or(0),
        _ => 0,
    }
}

fn with_strings_clipped(value: &Value, cap: usize) -> Value {
    match value {
        Value::String(s) => Value::String(clip(s, cap)),
        Value::Array(items) => {
            Value::Array(items.iter().map(|v| with_strings_clipped(v, cap)).collect())
        }
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), with_strings_clipped(v, cap)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The first `limit` characters and a note of what was cut. An untrusted-content block the kept
/// part opened is closed before the note, so clipped web text never runs on unmarked.
fn clip(text: &str, limit: usize) -> String {
    let total = text.chars().count();
    if total <= limit {
        return text.to_owned();
    }
    let kept: String = text.chars().take(limit).collect();
    let open = kept.matches(OPEN_UNTRUSTED).count() > kept.matches(CLOSE_UNTRUSTED).count();
    format!(
        "{kept}{}\n[clipped: {} more characters not shown; the full result is stored with the step]",
        if open {
            format!("\n{CLOSE_UNTRUSTED}")
        } else {
            String::new()
        },
        total - limit
    )
}

/// The model's turn, read as a step.
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    pub thought: Option<String>,
    /// Tool calls in order; none means `final_answer` is the answer.
    pub calls: Vec<ToolCall>,
    pub final_answer: Option<String>,
}

/// Why a turn can't be used as it is.
#[derive(Debug, Clone, PartialEq)]
pub enum Unusable {
    /// Worth one repair turn quoting this problem.
    Invalid(String),
    /// The output hit max_tokens.
    Truncated,
    /// The model refused; not repaired.
    Refused(String),
}

/// Native mode: text is the thought; `tool_use` blocks are the calls; a turn without any is the
/// final answer.
pub fn parse_native(content: &[Value], stop_reason: Option<&str>) -> Result<Turn, Unusable> {
    let text = content_text(&Value::Array(content.to_vec()));
    let calls: Vec<ToolCall> = content
        .iter()
        .filter(|block| block["type"] == "tool_use")
        .map(|block| ToolCall {
            tool: block["name"].as_str().unwrap_or_default().to_owned(),
            args: block.get("input").cloned().unwrap_or(json!({})),
        })
        .collect();
    match stop_reason {
        Some("refusal") => return Err(Unusable::Refused(text)),
        Some("max_tokens") => return Err(Unusable::Truncated),
        _ => {}
    }
    let thought = Some(text.clone()).filter(|t| !t.trim().is_empty());
    if calls.is_empty() {
        if thought.is_none() {
            return Err(Unusable::Invalid(
                "the reply had neither text nor a tool call; answer the question or call a tool"
                    .into(),
            ));
        }
        return Ok(Turn {
            thought: None,
            calls,
            final_answer: thought,
        });
    }
    Ok(Turn {
        thought,
        calls,
        final_answer: None,
    })
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonTurn {
    thought: String,
    action: Option<JsonAction>,
    is_final: bool,
    #[serde(default)]
    final_answer: Option<String>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonAction {
    tool: String,
    #[serde(default = "empty_object")]
    args: Value,
}

fn empty_object() -> Value {
    json!({})
}

/// JSON mode: one JSON object (a ```json fence is tolerated), validated by serde and for
/// consistency.
pub fn parse_json(text: &str, stop_reason: Option<&str>) -> Result<Turn, Unusable> {
    if stop_reason == Some("refusal") {
        return Err(Unusable::Refused(text.to_owned()));
    }
    let trimmed = text.trim();
    let body = match (trimmed.find('{'), trimmed.rfind('}')) {
        (Some(start), Some(end)) if start < end => &trimmed[start..=end],
        _ if stop_reason == Some("max_tokens") => return Err(Unusable::Truncated),
        _ => {
            return Err(Unusable::Invalid(
                "the reply contains no JSON object".into(),
            ));
        }
    };
    let parsed: JsonTurn = serde_json::from_str(body).map_err(|e| {
        if stop_reason == Some("max_tokens") {
            Unusable::Truncated
        } else {
            Unusable::Invalid(format!("invalid JSON turn: {e}"))
        }
    })?;
    let thought = Some(parsed.thought).filter(|t| !t.trim().is_empty());
    match (parsed.is_final, parsed.action, parsed.final_answer) {
        (true, None, Some(answer)) if !answer.trim().is_empty() => Ok(Turn {
            thought,
            calls: Vec::new(),
            final_answer: Some(answer),
        }),
        (true, Some(_), _) => Err(Unusable::Invalid(
            "is_final is true but an action is given".into(),
        )),
        (true, None, _) => Err(Unusable::Invalid(
            "is_final is true but final_answer is missing or empty".into(),
        )),
        (false, Some(action), _) => Ok(Turn {
            thought,
            calls: vec![ToolCall {
                tool: action.tool,
                args: action.args,
            }],
            final_answer: None,
        }),
        (false, None, _) => Err(Unusable::Invalid(
            "is_final is false but no action is given".into(),
        )),
    }
}

#[cfg(test)]
#[path = "prompt_tests.rs"]
mod tests;
