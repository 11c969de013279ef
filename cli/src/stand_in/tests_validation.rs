//! Refusals: every request the real API would refuse is refused, with its status and message.

use pretty_assertions::assert_eq;
use serde_json::{Value, json};

use super::tests::{request, start, with_tools};

/// (request headers, status, error type, message prefix)
type HeaderCase = (
    &'static [(&'static str, &'static str)],
    u16,
    &'static str,
    &'static str,
);

#[tokio::test]
async fn header_refusals() {
    let s = start().await;
    let body = request(json!([{"role": "user", "content": "hi"}])).to_string();
    let cases: [HeaderCase; 4] = [
        (
            &[("anthropic-version", "2023-06-01")],
            401,
            "authentication_error",
            "x-api-key header is required",
        ),
        (
            &[("x-api-key", "")],
            401,
            "authentication_error",
            "x-api-key header is required",
        ),
        (
            &[("x-api-key", "k")],
            400,
            "invalid_request_error",
            "anthropic-version: header is required",
        ),
        (
            &[("x-api-key", "k"), ("anthropic-version", "2024-01-01")],
            400,
            "invalid_request_error",
            "anthropic-version: invalid version",
        ),
    ];
    for (headers, status, error_type, message) in cases {
        let (got, resp_headers, body) = s.send(headers, body.clone()).await;
        assert_eq!(
            (got, &body["type"], &body["error"]["type"]),
            (status, &json!("error"), &json!(error_type))
        );
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with(message),
            "{body}"
        );
        assert!(
            resp_headers["request-id"]
                .to_str()
                .unwrap()
                .starts_with("req_")
        );
    }
    assert_eq!(s.llm.calls().len(), 4);
}

fn user(content: Value) -> Value {
    json!({"role": "user", "content": content})
}

fn assistant(content: Value) -> Value {
    json!({"role": "assistant", "content": content})
}

fn tool_use(id: &str, name: &str) -> Value {
    json!({"type": "tool_use", "id": id, "name": name, "input": {}})
}

fn tool_result(id: &str) -> Value {
    json!({"type": "tool_result", "tool_use_id": id, "content": "r"})
}

/// (request body, message the 400 must contain)
fn refused_bodies() -> Vec<(Value, &'static str)> {
    let hi = user(json!("hi"));
    let echo = |messages: Value| with_tools(request(messages), &["echo"]);
    let mut no_max = request(json!([hi]));
    no_max.as_object_mut().unwrap().remove("max_tokens");
    let mut extra = request(json!([hi]));
    extra["foo"] = json!(1);
    let mut stream = request(json!([hi]));
    stream["stream"] = json!(true);
    let mut bad_system = request(json!([hi]));
    bad_system["system"] = json!(42);
    let mut dup_tools = with_tools(request(json!([hi])), &["echo", "echo"]);
    dup_tools["tool_choice"] = json!({"type": "auto"});
    let mut bad_schema = with_tools(request(json!([hi])), &["echo"]);
    bad_schema["tools"][0]["input_schema"] = json!({"type": "array"});
    vec![
        (json!([1, 2]), "expected a JSON object"),
        (no_max, "max_tokens: Field required"),
        (
            json!({"model": "m", "max_tokens": 0, "messages": [hi]}),
            "max_tokens: Input should be greater than or equal to 1",
        ),
        (
            json!({"model": "m", "max_tokens": "9", "messages": [hi]}),
            "max_tokens: Input should be a valid integer",
        ),
        (
            json!({"model": "", "max_tokens": 9, "messages": [hi]}),
            "model: String should have at least 1 character",
        ),
        (
            json!({"max_tokens": 9, "messages": [hi]}),
            "model: Field required",
        ),
        (
            json!({"model": "m", "max_tokens": 9}),
            "messages: Field required",
        ),
        (
            request(json!([])),
            "messages: at least one message is required",
        ),
        (extra, "foo: Extra inputs are not permitted"),
        (stream, "stream:"),
        (bad_system, "system: Input should be"),
        (
            request(json!([{"role": "system", "content": "x"}, hi])),
            "messages.0.role:",
        ),
        (
            request(json!([{"role": "bot", "content": "x"}])),
            "messages.0.role:",
        ),
        (
            request(json!([assistant(json!("x")), hi])),
            "first message must use the \"user\" role",
        ),
        (
            request(json!([hi, hi])),
            "roles must alternate between user and assistant",
        ),
        (
            request(json!([user(json!(""))])),
            "messages.0: all messages must have non-empty content",
        ),
        (
            request(json!([user(json!([]))])),
            "messages.0: all messages must have non-empty content",
        ),
        (
            request(json!([user(json!([{"type": "text", "text": ""}]))])),
            "messages.0.content.0.text:",
        ),
        (
            request(json!([user(json!([{"type": "image", "source": {}}]))])),
            "messages.0.content.0.type:",
        ),
        (
            request(json!([user(
                json!([{"type": "text", "text": "x", "bogus": 1}])
            )])),
            "messages.0.content.0.bogus: Extra inputs",
        ),
        (
            echo(json!([hi, assistant(json!([tool_use("toolu_1", "echo")]))])),
            "tool_use ids were found without tool_result blocks immediately after: toolu_1",
        ),
        (
            echo(json!([
                hi,
                assistant(json!([tool_use("toolu_1", "echo")])),
                user(json!("no result"))
            ])),
            "tool_use ids were found without tool_result blocks immediately after: toolu_1",
        ),
        (
            echo(json!([user(json!([tool_result("toolu_9")]))])),
            "unexpected tool_use_id found in tool_result blocks: toolu_9",
        ),
        (
            echo(json!([
                hi,
                assistant(json!([tool_use("toolu_1", "echo")])),
                user(json!([{"type": "text", "text": "first"}, tool_result("toolu_1")]))
            ])),
            "tool_result blocks must come before any text block",
        ),
        (
            request(json!([
                hi,
                assistant(json!([tool_use("toolu_1", "echo")])),
                user(json!([tool_result("toolu_1")]))
            ])),
            "must define tools",
        ),
        (
            echo(json!([user(json!([tool_use("toolu_1", "echo")]))])),
            "only allowed in assistant messages",
        ),
        (
            echo(json!([
                hi,
                assistant(
                    json!([{"type": "tool_use", "id": "toolu_1", "name": "echo", "input": []}])
                )
            ])),
            "messages.1.content.0.input: Input should be a valid dictionary",
        ),
        (
            with_tools(request(json!([hi])), &["bad name!"]),
            "tools.0.name: String should match pattern",
        ),
        (dup_tools, "Tool names must be unique"),
        (
            bad_schema,
            "tools.0.input_schema.type: Input should be 'object'",
        ),
    ]
}

#[tokio::test]
async fn invalid_bodies_are_refused_with_400() {
    let s = start().await;
    let cases = refused_bodies();
    for (body, message) in &cases {
        let (status, _, answer) = s.post(body).await;
        assert_eq!(
            (status, &answer["error"]["type"]),
            (400, &json!("invalid_request_error")),
            "{body}"
        );
        let got = answer["error"]["message"].as_str().unwrap();
        assert!(
            got.contains(message),
            "{body}\nwanted {message:?} in {got:?}"
        );
    }
    let calls = s.llm.calls();
    assert_eq!(calls.len(), cases.len());
    assert!(calls.iter().all(|c| c.status == 400 && c.usage.is_none()));
    assert_eq!(calls[1].request, cases[1].0);
}

#[tokio::test]
async fn valid_extras_are_accepted() {
    let s = start().await;
    let cc = json!({"type": "ephemeral"});
    let mut body = with_tools(
        request(json!([
            user(json!([{"type": "text", "text": "q", "cache_control": cc}])),
            assistant(json!([{"type": "text", "text": "calling"}, tool_use("toolu_1", "echo")])),
            user(
                json!([{"type": "tool_result", "tool_use_id": "toolu_1", "is_error": true, "cache_control": cc,
                         "content": [{"type": "text", "text": "boom"}]},
                        {"type": "text", "text": "after the result"}])
            ),
        ])),
        &["echo"],
    );
    body["tools"][0]["cache_control"] = cc.clone();
    body["system"] = json!([{"type": "text", "text": "be brief", "cache_control": cc}]);
    body["tool_choice"] = json!({"type": "any"});
    body["temperature"] = json!(0.2);
    body["stop_sequences"] = json!(["STOP"]);
    body["metadata"] = json!({"user_id": "u1"});
    let (status, _, answer) = s.post(&body).await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer["content"][0]["text"]
            .as_str()
            .unwrap()
            .ends_with("The tool returned: boom")
    );
    body["system"] = json!("plain system prompt");
    let (status, _, _) = s.post(&body).await;
    assert_eq!(status, 200);
}
