//! Builds the LLM conversation for step n from what Postgres holds: the client's messages, then
//! for every earlier step the model's turn as returned and the tool results it asked for. The
//! prompt is a pure function of stored state, so any worker can rebuild it after a crash.

use agentq_shared::schemas::{Role, ToolCall, ValidatedRun};
use agentq_shared::store::StepRow;
use serde_json::{Value, json};

use crate::llm::LlmRequest;

const AGENT_PROMPT: &str = "You are an agent run by agentq. Work step by step: when a tool would \
help, call it; when you can answer, answer in plain text without calling a tool.";

pub fn build(
    run: &ValidatedRun,
    history: &[StepRow],
    tools: Vec<Value>,
    max_tokens: u32,
) -> LlmRequest {
    let mut system = vec![AGENT_PROMPT.to_owned()];
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
        messages.push(json!({"role": "assistant", "content": row.llm_content.0}));
        let results = tool_results(row);
        if !results.is_empty() {
            messages.push(json!({"role": "user", "content": results}));
        }
    }
    LlmRequest {
        model: run.model.clone(),
        system: Some(system.join("\n\n")),
        messages,
        tools,
        max_tokens,
    }
}

/// One `tool_result` per `tool_use` block of the step: the first carries the observation; the
/// model is told that any further call in the same turn was not run.
fn tool_results(row: &StepRow) -> Vec<Value> {
    let observation = row.observation.as_ref().map(|o| &o.0);
    tool_use_ids(&row.llm_content.0)
        .into_iter()
        .enumerate()
        .map(|(i, id)| match (i, observation) {
            (0, Some(observation)) => json!({
                "type": "tool_result",
                "tool_use_id": id,
                "content": observation_text(observation),
                "is_error": observation.get("success") == Some(&Value::Bool(false)),
            }),
            _ => json!({
                "type": "tool_result",
                "tool_use_id": id,
                "content": "Not run: agentq runs one tool call per step. Call it again if you still need it.",
                "is_error": true,
            }),
        })
        .collect()
}

fn tool_use_ids(content: &Value) -> Vec<String> {
    content
        .as_array()
        .into_iter()
        .flatten()
        .filter(|block| block["type"] == "tool_use")
        .filter_map(|block| block["id"].as_str().map(str::to_owned))
        .collect()
}

/// A tool result as the model reads it: the result (or error) as JSON text.
fn observation_text(observation: &Value) -> String {
    let shown = match (observation.get("result"), observation.get("error")) {
        (_, Some(Value::String(error))) => json!({"error": error}),
        (Some(result), _) => result.clone(),
        _ => observation.clone(),
    };
    match shown {
        Value::String(text) => text,
        other => other.to_string(),
    }
}

/// The model's turn read as a step: text is the thought; the first `tool_use` is the action; a
/// turn without any `tool_use` is the final answer.
pub struct ParsedTurn {
    pub thought: Option<String>,
    pub action: Option<ToolCall>,
}

pub fn parse_turn(content: &[Value]) -> ParsedTurn {
    let text: Vec<&str> = content
        .iter()
        .filter(|block| block["type"] == "text")
        .filter_map(|block| block["text"].as_str())
        .collect();
    let thought = Some(text.join("\n")).filter(|t| !t.trim().is_empty());
    let action = content
        .iter()
        .find(|block| block["type"] == "tool_use")
        .map(|block| ToolCall {
            tool: block["name"].as_str().unwrap_or_default().to_owned(),
            args: block.get("input").cloned().unwrap_or(json!({})),
        });
    ParsedTurn { thought, action }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentq_shared::schemas::Message;
    use pretty_assertions::assert_eq;
    use sqlx::types::Json;

    fn step(content: Value, observation: Option<Value>) -> StepRow {
        StepRow {
            step_index: 0,
            thought: None,
            llm_content: Json(content),
            action: None,
            is_final: false,
            final_answer: None,
            observation: observation.map(Json),
            tool_started_at: None,
            finished_at: None,
            approval: None,
            approval_reason: None,
        }
    }

    #[test]
    fn history_alternates_and_answers_every_tool_use() {
        let run = ValidatedRun {
            messages: vec![
                Message {
                    role: "system".into(),
                    content: "be brief".into(),
                },
                Message {
                    role: "user".into(),
                    content: "hi".into(),
                },
            ],
            model: "m".into(),
            tools: vec![],
            max_steps: 3,
        };
        let turn = json!([
            {"type": "text", "text": "let me look"},
            {"type": "tool_use", "id": "t1", "name": "echo", "input": {"text": "a"}},
            {"type": "tool_use", "id": "t2", "name": "echo", "input": {"text": "b"}}
        ]);
        let observation = json!({"tool_name": "echo", "success": true, "result": {"text": "a"},
                                 "error": null, "execution_time_ms": 1});
        let request = build(&run, &[step(turn.clone(), Some(observation))], vec![], 100);
        assert_eq!(
            request.system.as_deref(),
            Some(format!("{AGENT_PROMPT}\n\nbe brief").as_str())
        );
        assert_eq!(
            request.messages,
            vec![
                json!({"role": "user", "content": "hi"}),
                json!({"role": "assistant", "content": turn}),
                json!({"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": "{\"text\":\"a\"}", "is_error": false},
                    {"type": "tool_result", "tool_use_id": "t2", "is_error": true,
                     "content": "Not run: agentq runs one tool call per step. Call it again if you still need it."}
                ]}),
            ]
        );
    }

    #[test]
    fn text_is_the_thought_and_the_first_tool_use_the_action() {
        let parsed = parse_turn(&[
            json!({"type": "text", "text": "thinking"}),
            json!({"type": "tool_use", "id": "t", "name": "echo", "input": {"text": "x"}}),
        ]);
        assert_eq!(parsed.thought.as_deref(), Some("thinking"));
        assert_eq!(
            parsed.action,
            Some(ToolCall {
                tool: "echo".into(),
                args: json!({"text": "x"})
            })
        );
        let final_turn = parse_turn(&[json!({"type": "text", "text": "42"})]);
        assert_eq!(
            (final_turn.thought.as_deref(), final_turn.action),
            (Some("42"), None)
        );
    }
}
