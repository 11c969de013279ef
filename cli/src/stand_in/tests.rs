//! Test helpers; scripted conversations and error turns.

use std::time::{Duration, Instant};

use pretty_assertions::assert_eq;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use super::{FakeLlm, Turn, Usage};

pub(super) struct Server {
    pub llm: FakeLlm,
    pub base: String,
    client: reqwest::Client,
}

pub(super) async fn start() -> Server {
    let llm = FakeLlm::new();
    let addr = llm.spawn().await.unwrap();
    Server {
        llm,
        base: format!("http://{addr}"),
        client: reqwest::Client::new(),
    }
}

impl Server {
    /// POSTs `body` to /v1/messages with exactly `headers`.
    pub async fn send(&self, headers: &[(&str, &str)], body: String) -> (u16, HeaderMap, Value) {
        let mut req = self
            .client
            .post(format!("{}/v1/messages", self.base))
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        (status, headers, resp.json().await.unwrap())
    }

    /// POSTs a JSON request with valid headers.
    pub async fn post(&self, body: &Value) -> (u16, HeaderMap, Value) {
        let headers = [
            ("x-api-key", "test-key"),
            ("anthropic-version", "2023-06-01"),
            ("content-type", "application/json"),
        ];
        self.send(&headers, body.to_string()).await
    }
}

pub(super) fn request(messages: Value) -> Value {
    json!({"model": "claude-test", "max_tokens": 256, "messages": messages})
}

pub(super) fn with_tools(mut req: Value, names: &[&str]) -> Value {
    let tools: Vec<Value> = names
        .iter()
        .map(|n| json!({"name": n, "description": "test tool", "input_schema": {"type": "object"}}))
        .collect();
    req["tools"] = Value::Array(tools);
    req
}

fn len(v: &Value) -> u64 {
    if v.is_null() {
        0
    } else {
        v.to_string().len() as u64
    }
}

/// The documented default usage formula, computed on the client side.
pub(super) fn expected_usage(req: &Value, content: &Value) -> Usage {
    Usage {
        input_tokens: (len(&req["messages"]) + len(&req["system"]) + len(&req["tools"])) / 4 + 1,
        output_tokens: len(content) / 4 + 1,
        ..Usage::default()
    }
}

#[tokio::test]
async fn scripted_tool_then_answer_conversation() {
    let s = start().await;
    let usage = Usage {
        input_tokens: 7,
        output_tokens: 3,
        cache_creation_input_tokens: 2,
        cache_read_input_tokens: 1,
    };
    s.llm.script(
        "MARK-A",
        vec![
            Turn::tool("echo", json!({"text": "hi"})).with_text("thinking"),
            Turn::answer("done").usage(usage),
        ],
    );
    let user = json!({"role": "user", "content": "MARK-A please echo"});
    let first = with_tools(request(json!([user])), &["echo"]);
    let (status, headers, body) = s.post(&first).await;
    assert_eq!(status, 200, "{body}");
    assert!(headers["request-id"].to_str().unwrap().starts_with("req_"));
    assert!(body["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(
        (&body["type"], &body["role"], &body["model"]),
        (
            &json!("message"),
            &json!("assistant"),
            &json!("claude-test")
        )
    );
    assert_eq!(
        body["content"][0],
        json!({"type": "text", "text": "thinking"})
    );
    let tool_use = &body["content"][1];
    assert_eq!(
        (&tool_use["type"], &tool_use["name"]),
        (&json!("tool_use"), &json!("echo"))
    );
    assert_eq!(tool_use["input"], json!({"text": "hi"}));
    let id = tool_use["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("toolu_"), "{id}");
    assert_eq!(
        (&body["stop_reason"], &body["stop_sequence"]),
        (&json!("tool_use"), &Value::Null)
    );
    let want = expected_usage(&first, &body["content"]);
    assert_eq!(body["usage"]["input_tokens"], json!(want.input_tokens));
    assert_eq!(body["usage"]["output_tokens"], json!(want.output_tokens));
    assert_eq!(body["usage"]["cache_read_input_tokens"], json!(0));

    let result = json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": id, "content": "hi"}]});
    let assistant = json!({"role": "assistant", "content": body["content"]});
    let second = with_tools(request(json!([user, assistant, result])), &["echo"]);
    let (status, _, body) = s.post(&second).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["content"], json!([{"type": "text", "text": "done"}]));
    assert_eq!(body["stop_reason"], json!("end_turn"));
    assert_eq!(body["usage"]["cache_creation_input_tokens"], json!(2));
    assert_eq!(s.llm.calls()[1].usage, Some(usage));

    // Turn selection depends only on how many assistant messages the request holds.
    let direct = request(json!([
        {"role": "user", "content": "MARK-A again"},
        {"role": "assistant", "content": "earlier"},
        {"role": "user", "content": "go on"},
    ]));
    let (status, _, body) = s.post(&direct).await;
    assert_eq!((status, &body["content"][0]["text"]), (200, &json!("done")));

    let third = request(
        json!([user, {"role": "assistant", "content": "a"}, {"role": "user", "content": "b"},
        {"role": "assistant", "content": "c"}, {"role": "user", "content": "d"}]),
    );
    let (status, _, body) = s.post(&third).await;
    assert_eq!(status, 500);
    assert_eq!(
        body,
        json!({"type": "error", "error": {"type": "api_error", "message": "script exhausted"}})
    );
    assert_eq!(s.llm.calls_for("MARK-A").len(), 4);
    assert!(s.llm.calls_for("MARK-B").is_empty());
}

#[tokio::test]
async fn error_turns_stop_reasons_delays_and_parallel_tools() {
    let s = start().await;
    s.llm.script(
        "MARK-529",
        vec![Turn::error(529, "overloaded_error", "busy").retry_after(3)],
    );
    s.llm.script(
        "MARK-429",
        vec![Turn::error(429, "rate_limit_error", "slow down")],
    );
    s.llm.script(
        "MARK-MAX",
        vec![
            Turn::answer("cut")
                .stop_reason("max_tokens")
                .delay(Duration::from_millis(300)),
        ],
    );
    s.llm.script(
        "MARK-PAR",
        vec![
            Turn::tool("a", json!({})).and_tool("b", json!({"x": 1})),
            Turn::raw_text("{}"),
        ],
    );

    let (status, headers, body) = s
        .post(&request(json!([{"role": "user", "content": "MARK-529"}])))
        .await;
    assert_eq!(status, 529);
    assert_eq!(headers["retry-after"], "3");
    assert!(headers.contains_key("request-id"));
    assert_eq!(
        body,
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "busy"}})
    );
    let (status, headers, body) = s
        .post(&request(json!([{"role": "user", "content": "MARK-429"}])))
        .await;
    assert_eq!(
        (status, &body["error"]["type"]),
        (429, &json!("rate_limit_error"))
    );
    assert!(!headers.contains_key("retry-after"));

    let started = Instant::now();
    let (status, _, body) = s
        .post(&request(json!([{"role": "user", "content": "MARK-MAX"}])))
        .await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!((status, &body["stop_reason"]), (200, &json!("max_tokens")));

    let user = json!({"role": "user", "content": "MARK-PAR"});
    let (status, _, body) = s
        .post(&with_tools(request(json!([user])), &["a", "b"]))
        .await;
    assert_eq!((status, &body["stop_reason"]), (200, &json!("tool_use")));
    let ids: Vec<String> = (0..2)
        .map(|i| body["content"][i]["id"].as_str().unwrap().to_owned())
        .collect();
    assert_ne!(ids[0], ids[1]);
    let assistant = json!({"role": "assistant", "content": body["content"]});
    let results = |ids: &[String]| {
        let blocks: Vec<Value> = ids
            .iter()
            .map(|id| json!({"type": "tool_result", "tool_use_id": id, "content": "ok"}))
            .collect();
        json!({"role": "user", "content": blocks})
    };
    let partial = with_tools(
        request(json!([user, assistant, results(&ids[..1])])),
        &["a", "b"],
    );
    let (status, _, body) = s.post(&partial).await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"].as_str().unwrap().contains(&ids[1]),
        "{body}"
    );
    let full = with_tools(
        request(json!([user, assistant, results(&ids)])),
        &["a", "b"],
    );
    let (status, _, body) = s.post(&full).await;
    assert_eq!((status, &body["content"][0]["text"]), (200, &json!("{}")));

    let statuses: Vec<u16> = s.llm.calls().iter().map(|c| c.status).collect();
    assert_eq!(statuses, vec![529, 429, 200, 200, 400, 200]);
    assert_eq!(s.llm.calls()[0].usage, None);
}

#[tokio::test]
async fn scripted_unknown_tool_is_returned_anyway() {
    let s = start().await;
    s.llm
        .script("MARK-U", vec![Turn::tool("no_such_tool", json!({"q": 1}))]);
    let (status, _, body) = s
        .post(&with_tools(
            request(json!([{"role": "user", "content": "MARK-U"}])),
            &["echo"],
        ))
        .await;
    assert_eq!(
        (status, &body["content"][0]["name"]),
        (200, &json!("no_such_tool"))
    );
}
