//! Lenient readers over a request body (they also work on refused, malformed requests).

use serde_json::Value;

use super::Usage;

fn messages(request: &Value) -> &[Value] {
    request
        .get("messages")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn role_is(message: &Value, role: &str) -> bool {
    message.get("role").and_then(Value::as_str) == Some(role)
}

/// The text of a `content` value: the string itself, or its text blocks joined by newlines.
pub(super) fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// Text of the first message whose role is `user`.
pub(super) fn first_user_text(request: &Value) -> Option<String> {
    messages(request)
        .iter()
        .find(|m| role_is(m, "user"))
        .and_then(|m| m.get("content"))
        .map(text_of)
}

/// How many assistant messages the conversation already holds (= index of the turn to play).
pub(super) fn assistant_count(request: &Value) -> usize {
    messages(request)
        .iter()
        .filter(|m| role_is(m, "assistant"))
        .count()
}

/// Text of the last `tool_result` block in the conversation, if there is one.
pub(super) fn latest_tool_result_text(request: &Value) -> Option<String> {
    messages(request)
        .iter()
        .filter_map(|m| m.get("content").and_then(Value::as_array))
        .flatten()
        .rfind(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
        .map(|b| b.get("content").map(text_of).unwrap_or_default())
}

/// Names of the tools the request offers.
pub(super) fn offered_tools(request: &Value) -> Vec<&str> {
    request
        .get("tools")
        .and_then(Value::as_array)
        .map(|tools| {
            tools
                .iter()
                .filter_map(|t| t.get("name").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default()
}

fn serialized_len(value: Option<&Value>) -> u64 {
    match value {
        None | Some(Value::Null) => 0,
        Some(v) => serde_json::to_vec(v).map_or(0, |bytes| bytes.len() as u64),
    }
}

/// Usage reported when a turn does not override it:
/// input = bytes of serialized `messages` + `system` + `tools`, / 4, + 1;
/// output = bytes of the serialized content blocks, / 4, + 1; no cache tokens.
pub(super) fn default_usage(request: &Value, content: &Value) -> Usage {
    let input = ["messages", "system", "tools"]
        .iter()
        .map(|k| serialized_len(request.get(*k)))
        .sum::<u64>();
    Usage {
        input_tokens: input / 4 + 1,
        output_tokens: serialized_len(Some(content)) / 4 + 1,
        cache_creation_input_tokens: 0,
        cache_read_input_tokens: 0,
    }
}

/// At most `max` characters of `s` (never splits a character).
pub(super) fn truncate_chars(s: &str, max: usize) -> &str {
    s.char_indices().nth(max).map_or(s, |(at, _)| &s[..at])
}

/// The first http(s) URL in `text`, without trailing punctuation.
pub(super) fn first_url(text: &str) -> Option<&str> {
    let start = [text.find("https://"), text.find("http://")]
        .into_iter()
        .flatten()
        .min()?;
    let rest = &text[start..];
    let end = rest
        .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`'))
        .unwrap_or(rest.len());
    let url = rest[..end].trim_end_matches(['.', ',', ';', ':', '!', '?', ')', ']', '}']);
    let scheme = if url.starts_with("https://") {
        "https://".len()
    } else {
        "http://".len()
    };
    (url.len() > scheme).then_some(url)
}
