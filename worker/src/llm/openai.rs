//! An OpenAI-compatible chat-completions client with tool calls, for local model servers
//! (Ollama, vLLM, llama.cpp): `POST {OPENAI_BASE_URL}/chat/completions`. Requests and responses
//! are translated to and from the Anthropic shape the rest of agentq speaks.

use std::time::Duration;

use agentq_shared::config::OpenAiConfig;
use agentq_shared::schemas::Usage;
use serde_json::{Value, json};

use super::{LlmClient, LlmError, LlmRequest, LlmResponse};

pub struct OpenAiClient {
    http: reqwest::Client,
    endpoint: String,
    api_key: Option<String>,
    timeout: Duration,
}

impl OpenAiClient {
    pub fn new(config: &OpenAiConfig, timeout: Duration) -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(timeout)
                .connect_timeout(Duration::from_secs(10))
                .build()?,
            endpoint: format!("{}/chat/completions", config.base_url),
            api_key: config.api_key.clone(),
            timeout,
        })
    }
}

/// Our messages (content strings or Anthropic blocks) as chat-completions messages.
pub fn to_chat(request: &LlmRequest) -> Value {
    let mut messages = Vec::new();
    if let Some(system) = &request.system {
        messages.push(json!({"role": "system", "content": system}));
    }
    for message in &request.messages {
        let role = message["role"].as_str().unwrap_or("user");
        let Some(blocks) = message["content"].as_array() else {
            messages.push(json!({"role": role, "content": message["content"]}));
            continue;
        };
        let text: Vec<&str> = blocks
            .iter()
            .filter(|b| b["type"] == "text")
            .filter_map(|b| b["text"].as_str())
            .collect();
        if role == "assistant" {
            let calls: Vec<Value> = blocks
                .iter()
                .filter(|b| b["type"] == "tool_use")
                .map(|b| json!({"id": b["id"], "type": "function",
                                "function": {"name": b["name"], "arguments": b["input"].to_string()}}))
                .collect();
            let mut out = json!({"role": "assistant", "content": text.join("\n")});
            if !calls.is_empty() {
                out["tool_calls"] = json!(calls);
            }
            messages.push(out);
            continue;
        }
        for result in blocks.iter().filter(|b| b["type"] == "tool_result") {
            messages.push(json!({"role": "tool", "tool_call_id": result["tool_use_id"], "content": result["content"]}));
        }
        if !text.is_empty() {
            messages.push(json!({"role": "user", "content": text.join("\n")}));
        }
    }
    let mut body =
        json!({"model": request.model, "max_tokens": request.max_tokens, "messages": messages});
    if !request.tools.is_empty() {
        let tools: Vec<Value> = request
            .tools
            .iter()
            .map(|t| json!({"type": "function", "function": {
                "name": t["name"], "description": t["description"], "parameters": t["input_schema"]}}))
            .collect();
        body["tools"] = json!(tools);
    }
    body
}

/// A chat-completions answer as Anthropic content blocks, stop reason and usage.
pub fn from_chat(body: &Value) -> Result<(Vec<Value>, Option<String>, Usage), String> {
    let choice = body["choices"]
        .get(0)
        .ok_or("the response has no choices")?;
    let message = &choice["message"];
    let mut content = Vec::new();
    if let Some(text) = message["content"].as_str().filter(|t| !t.is_empty()) {
        content.push(json!({"type": "text", "text": text}));
    }
    for call in message["tool_calls"].as_array().into_iter().flatten() {
        let arguments = call["function"]["arguments"].as_str().unwrap_or("{}");
        let input: Value = serde_json::from_str(arguments)
            .unwrap_or_else(|_| json!({"_unparsed_arguments": arguments}));
        content.push(json!({"type": "tool_use", "id": call["id"], "name": call["function"]["name"], "input": input}));
    }
    let stop_reason = match choice["finish_reason"].as_str() {
        Some("tool_calls") => "tool_use",
        Some("length") => "max_tokens",
        Some("content_filter") => "refusal",
        _ => "end_turn",
    };
    let count = |v: &Value| v.as_u64().unwrap_or(0);
    let usage = &body["usage"];
    let cached = count(&usage["prompt_tokens_details"]["cached_tokens"]);
    let usage = Usage {
        input_tokens: count(&usage["prompt_tokens"]).saturating_sub(cached),
        output_tokens: count(&usage["completion_tokens"]),
        cache_read_tokens: cached,
        ..Default::default()
    };
    Ok((content, Some(stop_reason.to_owned()), usage))
}

#[async_trait::async_trait]
impl LlmClient for OpenAiClient {
    async fn complete(&self, request: &LlmRequest) -> Result<LlmResponse, LlmError> {
        let mut call = self.http.post(&self.endpoint).json(&to_chat(request));
        if let Some(key) = &self.api_key {
            call = call.bearer_auth(key);
        }
        let transport = |e: reqwest::Error| {
            if e.is_timeout() {
                LlmError::Timeout(self.timeout)
            } else {
                LlmError::Transport(e.without_url().to_string())
            }
        };
        let response = call.send().await.map_err(transport)?;
        let status = response.status().as_u16();
        let body: Value = response.json().await.map_err(transport)?;
        if status != 200 {
            let message = body["error"]["message"]
                .as_str()
                .map_or_else(|| body.to_string(), str::to_owned);
            return Err(LlmError::Status {
                status,
                message,
                retry_after: None,
            });
        }
        let (content, stop_reason, usage) = from_chat(&body).map_err(LlmError::Transport)?;
        Ok(LlmResponse {
            content,
            stop_reason,
            usage,
            http_status: status,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn tool_use_history_becomes_tool_calls_and_tool_messages() {
        let request = LlmRequest {
            model: "llama3".into(),
            system: Some("be brief".into()),
            messages: vec![
                json!({"role": "user", "content": "hi"}),
                json!({"role": "assistant", "content": [
                    {"type": "text", "text": "checking"},
                    {"type": "tool_use", "id": "c1", "name": "echo", "input": {"text": "a"}}]}),
                json!({"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "c1", "content": "a", "is_error": false}]}),
            ],
            tools: vec![
                json!({"name": "echo", "description": "d", "input_schema": {"type": "object"}}),
            ],
            max_tokens: 50,
        };
        assert_eq!(
            to_chat(&request),
            json!({"model": "llama3", "max_tokens": 50, "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "checking", "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "echo", "arguments": "{\"text\":\"a\"}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "a"}],
              "tools": [{"type": "function", "function": {"name": "echo", "description": "d", "parameters": {"type": "object"}}}]})
        );
    }

    #[test]
    fn answers_become_content_blocks() {
        let body = json!({"choices": [{"finish_reason": "tool_calls", "message": {"content": null, "tool_calls": [
            {"id": "c2", "type": "function", "function": {"name": "echo", "arguments": "{\"text\": \"b\"}"}}]}}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 7, "prompt_tokens_details": {"cached_tokens": 40}}});
        let (content, stop, usage) = from_chat(&body).unwrap();
        assert_eq!(
            content,
            vec![json!({"type": "tool_use", "id": "c2", "name": "echo", "input": {"text": "b"}})]
        );
        assert_eq!(stop.as_deref(), Some("tool_use"));
        assert_eq!(
            (
                usage.input_tokens,
                usage.output_tokens,
                usage.cache_read_tokens
            ),
            (60, 7, 40)
        );
    }
}
