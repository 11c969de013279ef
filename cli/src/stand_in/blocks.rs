//! Checks of single tool_use / tool_result content blocks.

use serde_json::Value;

use super::validate::{ApiError, check_text_block, invalid, no_extra_fields, required, valid_name};

/// `{type, id, name, input}`; returns (id, name).
pub(super) fn check_tool_use<'a>(
    path: &str,
    block: &'a Value,
) -> Result<(&'a str, &'a str), ApiError> {
    let obj = block
        .as_object()
        .ok_or_else(|| invalid(format!("{path}: Input should be a valid dictionary")))?;
    no_extra_fields(path, obj, &["type", "id", "name", "input"])?;
    let id = match required(path, obj, "id")? {
        Value::String(id) if valid_name(id, usize::MAX) => id,
        _ => {
            return Err(invalid(format!(
                "{path}.id: String should match pattern '^[a-zA-Z0-9_-]+$'"
            )));
        }
    };
    let name = match required(path, obj, "name")? {
        Value::String(name) if !name.is_empty() => name,
        _ => {
            return Err(invalid(format!(
                "{path}.name: Input should be a non-empty string"
            )));
        }
    };
    if !required(path, obj, "input")?.is_object() {
        return Err(invalid(format!(
            "{path}.input: Input should be a valid dictionary"
        )));
    }
    Ok((id, name))
}

/// `{type, tool_use_id, content?, is_error?}`; returns the tool_use_id.
pub(super) fn check_tool_result<'a>(path: &str, block: &'a Value) -> Result<&'a str, ApiError> {
    let obj = block
        .as_object()
        .ok_or_else(|| invalid(format!("{path}: Input should be a valid dictionary")))?;
    no_extra_fields(path, obj, &["type", "tool_use_id", "content", "is_error"])?;
    let id = match required(path, obj, "tool_use_id")? {
        Value::String(id) if valid_name(id, usize::MAX) => id,
        _ => {
            return Err(invalid(format!(
                "{path}.tool_use_id: String should match pattern '^[a-zA-Z0-9_-]+$'"
            )));
        }
    };
    match obj.get("content") {
        None | Some(Value::Null) | Some(Value::String(_)) => {}
        Some(Value::Array(blocks)) => {
            for (k, inner) in blocks.iter().enumerate() {
                check_text_block(&format!("{path}.content.{k}"), inner)?;
            }
        }
        Some(_) => {
            return Err(invalid(format!(
                "{path}.content: Input should be a valid string or a list of text blocks"
            )));
        }
    }
    if obj
        .get("is_error")
        .is_some_and(|e| !e.is_boolean() && !e.is_null())
    {
        return Err(invalid(format!(
            "{path}.is_error: Input should be a valid boolean"
        )));
    }
    Ok(id)
}
