//! Validation of `messages`: each message and block, role order, and tool_use/tool_result pairing.

use std::collections::HashSet;

use serde_json::Value;

use super::blocks::{check_tool_result, check_tool_use};
use super::validate::{ApiError, check_text_block, invalid, no_extra_fields, required};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    User,
    Assistant,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// What the pairing checks need to know about one message.
struct Checked<'a> {
    role: Role,
    /// (block index, id, name) of each tool_use block.
    tool_uses: Vec<(usize, &'a str, &'a str)>,
    /// (block index, tool_use_id) of each tool_result block.
    tool_results: Vec<(usize, &'a str)>,
}

/// Checks the `messages` field; `tools` is the set of offered tool names (`None` without `tools`).
pub(super) fn check(
    messages: Option<&Value>,
    tools: Option<&HashSet<String>>,
) -> Result<(), ApiError> {
    let list = match messages {
        None | Some(Value::Null) => return Err(invalid("messages: Field required")),
        Some(Value::Array(list)) => list,
        Some(_) => return Err(invalid("messages: Input should be a valid list")),
    };
    if list.is_empty() {
        return Err(invalid("messages: at least one message is required"));
    }
    let checked = list
        .iter()
        .enumerate()
        .map(|(i, m)| check_message(i, m))
        .collect::<Result<Vec<_>, _>>()?;
    check_roles(&checked)?;
    check_tool_pairing(&checked, tools)
}

fn check_roles(checked: &[Checked<'_>]) -> Result<(), ApiError> {
    if checked.first().is_some_and(|m| m.role != Role::User) {
        return Err(invalid(
            "messages.0.role: the first message must use the \"user\" role",
        ));
    }
    for (i, pair) in checked.windows(2).enumerate() {
        if pair[0].role == pair[1].role {
            let role = pair[1].role.as_str();
            return Err(invalid(format!(
                "messages.{}: roles must alternate between user and assistant, \
                 but messages {i} and {} are both \"{role}\"",
                i + 1,
                i + 1
            )));
        }
    }
    Ok(())
}

fn check_tool_pairing(
    checked: &[Checked<'_>],
    tools: Option<&HashSet<String>>,
) -> Result<(), ApiError> {
    const NEED_TOOLS: &str =
        "Requests which include tool_use or tool_result blocks must define tools.";
    let mut seen_ids = HashSet::new();
    for (i, msg) in checked.iter().enumerate() {
        // A tool_use of a tool the request does not offer is accepted: agents replay a model's
        // call of an unknown tool together with an error result.
        for &(j, id, _) in &msg.tool_uses {
            tools.ok_or_else(|| invalid(NEED_TOOLS))?;
            if !seen_ids.insert(id) {
                return Err(invalid(format!(
                    "messages.{i}.content.{j}.id: tool_use ids must be unique ({id})"
                )));
            }
        }
        if !msg.tool_uses.is_empty() {
            let answered: HashSet<&str> = checked
                .get(i + 1)
                .map(|next| next.tool_results.iter().map(|&(_, id)| id).collect())
                .unwrap_or_default();
            let missing: Vec<&str> = msg
                .tool_uses
                .iter()
                .map(|&(_, id, _)| id)
                .filter(|id| !answered.contains(id))
                .collect();
            if !missing.is_empty() {
                return Err(invalid(format!(
                    "messages.{i}: tool_use ids were found without tool_result blocks immediately after: {}. \
                     Each tool_use block must have a corresponding tool_result block in the next message.",
                    missing.join(", ")
                )));
            }
        }
        if msg.tool_results.is_empty() {
            continue;
        }
        if tools.is_none() {
            return Err(invalid(NEED_TOOLS));
        }
        let offered: HashSet<&str> = i
            .checked_sub(1)
            .and_then(|p| checked.get(p))
            .map(|prev| prev.tool_uses.iter().map(|&(_, id, _)| id).collect())
            .unwrap_or_default();
        let mut answered = HashSet::new();
        for &(j, id) in &msg.tool_results {
            if !offered.contains(id) {
                return Err(invalid(format!(
                    "messages.{i}.content.{j}: unexpected tool_use_id found in tool_result blocks: {id}. \
                     Each tool_result block must have a corresponding tool_use block in the previous message."
                )));
            }
            if !answered.insert(id) {
                return Err(invalid(format!(
                    "messages.{i}.content.{j}: each tool_use must have a single result (duplicate tool_result for {id})"
                )));
            }
        }
    }
    Ok(())
}

fn check_message(i: usize, message: &Value) -> Result<Checked<'_>, ApiError> {
    let path = format!("messages.{i}");
    let obj = message
        .as_object()
        .ok_or_else(|| invalid(format!("{path}: Input should be a valid dictionary")))?;
    no_extra_fields(&path, obj, &["role", "content"])?;
    let role = match required(&path, obj, "role")? {
        Value::String(r) if r == "user" => Role::User,
        Value::String(r) if r == "assistant" => Role::Assistant,
        Value::String(r) if r == "system" => {
            return Err(invalid(format!(
                "{path}.role: Input should be 'user' or 'assistant' \
                 (the system prompt goes in the top-level \"system\" field)"
            )));
        }
        _ => {
            return Err(invalid(format!(
                "{path}.role: Input should be 'user' or 'assistant'"
            )));
        }
    };
    let mut checked = Checked {
        role,
        tool_uses: Vec::new(),
        tool_results: Vec::new(),
    };
    let empty = || invalid(format!("{path}: all messages must have non-empty content"));
    let blocks = match required(&path, obj, "content")? {
        Value::String(s) if s.is_empty() => return Err(empty()),
        Value::String(_) => return Ok(checked),
        Value::Array(blocks) if blocks.is_empty() => return Err(empty()),
        Value::Array(blocks) => blocks,
        _ => {
            return Err(invalid(format!(
                "{path}.content: Input should be a valid string or a list of content blocks"
            )));
        }
    };
    let mut seen_text = false;
    for (j, block) in blocks.iter().enumerate() {
        let bpath = format!("{path}.content.{j}");
        let kind = block
            .as_object()
            .and_then(|o| o.get("type"))
            .and_then(Value::as_str)
            .ok_or_else(|| {
                invalid(format!(
                    "{bpath}.type: Field required (a content block needs a string type)"
                ))
            })?;
        match kind {
            "text" => {
                check_text_block(&bpath, block)?;
                seen_text = true;
            }
            "tool_use" => {
                if role != Role::Assistant {
                    return Err(invalid(format!(
                        "{bpath}: tool_use blocks are only allowed in assistant messages"
                    )));
                }
                let (id, name) = check_tool_use(&bpath, block)?;
                checked.tool_uses.push((j, id, name));
            }
            "tool_result" => {
                if role != Role::User {
                    return Err(invalid(format!(
                        "{bpath}: tool_result blocks are only allowed in user messages"
                    )));
                }
                if seen_text {
                    return Err(invalid(format!(
                        "{bpath}: tool_result blocks must come before any text block in a user message"
                    )));
                }
                checked
                    .tool_results
                    .push((j, check_tool_result(&bpath, block)?));
            }
            other => {
                return Err(invalid(format!(
                    "{bpath}.type: Input tag '{other}' found using 'type' does not match any of the \
                     expected tags: 'text', 'tool_use', 'tool_result'"
                )));
            }
        }
    }
    Ok(checked)
}
