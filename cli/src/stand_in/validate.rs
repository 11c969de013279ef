//! Request validation: headers and the top level of the body. Messages are checked in `messages.rs`.

use std::collections::HashSet;

use axum::http::HeaderMap;
use serde_json::{Map, Value};

/// The only `anthropic-version` the real API accepts for the Messages API.
pub(super) const API_VERSION: &str = "2023-06-01";

/// Top-level fields the real API knows; anything else is refused as an extra input.
const TOP_LEVEL_FIELDS: &[&str] = &[
    "model",
    "max_tokens",
    "messages",
    "system",
    "tools",
    "tool_choice",
    "temperature",
    "top_p",
    "top_k",
    "stop_sequences",
    "metadata",
    "stream",
    "thinking",
    "service_tier",
    "container",
    "mcp_servers",
    "context_management",
];

/// A refusal: HTTP status, error `type`, human-readable message.
#[derive(Debug)]
pub(super) struct ApiError {
    pub status: u16,
    pub error_type: &'static str,
    pub message: String,
}

/// 400 `invalid_request_error`.
pub(super) fn invalid(message: impl Into<String>) -> ApiError {
    ApiError {
        status: 400,
        error_type: "invalid_request_error",
        message: message.into(),
    }
}

/// Checks headers, then the body; returns the validated request.
pub(super) fn check<'a>(
    headers: &HeaderMap,
    body: &'a Result<Value, String>,
) -> Result<&'a Value, ApiError> {
    check_headers(headers)?;
    let request = body.as_ref().map_err(|e| {
        invalid(format!(
            "There was an issue with the request body: invalid JSON ({e})"
        ))
    })?;
    let obj = request.as_object().ok_or_else(|| {
        invalid("There was an issue with the request body: expected a JSON object")
    })?;
    no_extra_fields("", obj, TOP_LEVEL_FIELDS)?;
    check_model(obj)?;
    check_max_tokens(obj)?;
    check_stream(obj)?;
    check_system(obj.get("system"))?;
    let tools = check_tools(obj.get("tools"))?;
    super::messages::check(obj.get("messages"), tools.as_ref())?;
    Ok(request)
}

fn check_headers(headers: &HeaderMap) -> Result<(), ApiError> {
    let present = |name: &str| headers.get(name).filter(|v| !v.is_empty());
    if present("x-api-key").is_none() {
        return Err(ApiError {
            status: 401,
            error_type: "authentication_error",
            message: "x-api-key header is required".to_owned(),
        });
    }
    match present("anthropic-version") {
        None => Err(invalid("anthropic-version: header is required")),
        Some(v) if v.as_bytes() == API_VERSION.as_bytes() => Ok(()),
        Some(v) => Err(invalid(format!(
            "anthropic-version: invalid version {:?}, expected {API_VERSION}",
            String::from_utf8_lossy(v.as_bytes())
        ))),
    }
}

/// Refuses keys not in `allowed`; `cache_control` is accepted (and ignored) everywhere.
pub(super) fn no_extra_fields(
    path: &str,
    obj: &Map<String, Value>,
    allowed: &[&str],
) -> Result<(), ApiError> {
    match obj
        .keys()
        .find(|k| k.as_str() != "cache_control" && !allowed.contains(&k.as_str()))
    {
        None => Ok(()),
        Some(key) if path.is_empty() => {
            Err(invalid(format!("{key}: Extra inputs are not permitted")))
        }
        Some(key) => Err(invalid(format!(
            "{path}.{key}: Extra inputs are not permitted"
        ))),
    }
}

/// A required field: absent or `null` is "Field required".
pub(super) fn required<'a>(
    path: &str,
    obj: &'a Map<String, Value>,
    key: &str,
) -> Result<&'a Value, ApiError> {
    match obj.get(key) {
        None | Some(Value::Null) if path.is_empty() => {
            Err(invalid(format!("{key}: Field required")))
        }
        None | Some(Value::Null) => Err(invalid(format!("{path}.{key}: Field required"))),
        Some(v) => Ok(v),
    }
}

/// An optional field; `null` counts as absent.
fn optional<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

fn check_model(obj: &Map<String, Value>) -> Result<(), ApiError> {
    match required("", obj, "model")? {
        Value::String(s) if s.is_empty() => {
            Err(invalid("model: String should have at least 1 character"))
        }
        Value::String(_) => Ok(()),
        _ => Err(invalid("model: Input should be a valid string")),
    }
}

fn check_max_tokens(obj: &Map<String, Value>) -> Result<(), ApiError> {
    let value = required("", obj, "max_tokens")?;
    if value.as_u64().is_some_and(|n| n >= 1) {
        Ok(())
    } else if value.is_i64() {
        Err(invalid(
            "max_tokens: Input should be greater than or equal to 1",
        ))
    } else {
        Err(invalid("max_tokens: Input should be a valid integer"))
    }
}

fn check_stream(obj: &Map<String, Value>) -> Result<(), ApiError> {
    match optional(obj, "stream") {
        None | Some(Value::Bool(false)) => Ok(()),
        Some(Value::Bool(true)) => Err(invalid(
            "stream: streaming is not supported by the agentq stand-in model",
        )),
        Some(_) => Err(invalid("stream: Input should be a valid boolean")),
    }
}

fn check_system(system: Option<&Value>) -> Result<(), ApiError> {
    match system {
        None | Some(Value::Null) | Some(Value::String(_)) => Ok(()),
        Some(Value::Array(blocks)) => {
            for (i, block) in blocks.iter().enumerate() {
                check_text_block(&format!("system.{i}"), block)?;
            }
            Ok(())
        }
        Some(_) => Err(invalid(
            "system: Input should be a valid string or a list of text blocks",
        )),
    }
}

/// A `{"type":"text","text":...}` block with non-empty text.
pub(super) fn check_text_block(path: &str, block: &Value) -> Result<(), ApiError> {
    let obj = block
        .as_object()
        .ok_or_else(|| invalid(format!("{path}: Input should be a valid dictionary")))?;
    match required(path, obj, "type")? {
        Value::String(t) if t == "text" => {}
        _ => return Err(invalid(format!("{path}.type: Input should be 'text'"))),
    }
    no_extra_fields(path, obj, &["type", "text", "citations"])?;
    match required(path, obj, "text")? {
        Value::String(t) if t.is_empty() => Err(invalid(format!(
            "{path}.text: text content blocks must be non-empty"
        ))),
        Value::String(_) => Ok(()),
        _ => Err(invalid(format!(
            "{path}.text: Input should be a valid string"
        ))),
    }
}

/// Checks `tools`; returns the offered tool names (`None` if no `tools` field).
fn check_tools(tools: Option<&Value>) -> Result<Option<HashSet<String>>, ApiError> {
    let list = match tools {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(list)) => list,
        Some(_) => return Err(invalid("tools: Input should be a valid list")),
    };
    let mut names = HashSet::new();
    for (i, tool) in list.iter().enumerate() {
        let path = format!("tools.{i}");
        let obj = tool
            .as_object()
            .ok_or_else(|| invalid(format!("{path}: Input should be a valid dictionary")))?;
        no_extra_fields(&path, obj, &["name", "description", "input_schema", "type"])?;
        if optional(obj, "type").is_some_and(|t| t != "custom") {
            return Err(invalid(format!(
                "{path}.type: only custom tools are supported by the agentq stand-in model"
            )));
        }
        let name = match required(&path, obj, "name")? {
            Value::String(name) if valid_name(name, 64) => name,
            _ => {
                return Err(invalid(format!(
                    "{path}.name: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'"
                )));
            }
        };
        if optional(obj, "description").is_some_and(|d| !d.is_string()) {
            return Err(invalid(format!(
                "{path}.description: Input should be a valid string"
            )));
        }
        let schema = required(&path, obj, "input_schema")?
            .as_object()
            .ok_or_else(|| {
                invalid(format!(
                    "{path}.input_schema: Input should be a valid dictionary"
                ))
            })?;
        if schema.get("type").and_then(Value::as_str) != Some("object") {
            return Err(invalid(format!(
                "{path}.input_schema.type: Input should be 'object'"
            )));
        }
        if !names.insert(name.clone()) {
            return Err(invalid(format!(
                "tools: Tool names must be unique (duplicate: {name})"
            )));
        }
    }
    Ok(Some(names))
}

/// `^[a-zA-Z0-9_-]{1,max}$`.
pub(super) fn valid_name(name: &str, max: usize) -> bool {
    !name.is_empty()
        && name.len() <= max
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}
