//! The default stand-in model, call recording, and the non-API routes.

use pretty_assertions::assert_eq;
use serde_json::{Value, json};

use super::tests::{expected_usage, request, start, with_tools};

#[tokio::test]
async fn default_stand_in_calls_echo_then_answers() {
    let s = start().await;
    let user = json!({"role": "user", "content": [{"type": "text", "text": "hello stand-in"}]});
    let first = with_tools(request(json!([user])), &["web_fetch", "echo"]);
    let (status, _, body) = s.post(&first).await;
    assert_eq!(
        (status, &body["stop_reason"]),
        (200, &json!("tool_use")),
        "{body}"
    );
    assert_eq!(
        body["content"][0]["text"],
        json!("[stand-in] I will call echo to answer this.")
    );
    assert_eq!(
        (&body["content"][1]["name"], &body["content"][1]["input"]),
        (&json!("echo"), &json!({"text": "hello stand-in"}))
    );
    let id = body["content"][1]["id"].clone();
    let result = json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": id,
        "content": [{"type": "text", "text": "echoed!"}]}]});
    let second = with_tools(
        request(json!([user, {"role": "assistant", "content": body["content"]}, result])),
        &["web_fetch", "echo"],
    );
    let (status, _, body) = s.post(&second).await;
    assert_eq!((status, &body["stop_reason"]), (200, &json!("end_turn")));
    let text =
        "[agentq stand-in model, not Claude] You asked: hello stand-in. The tool returned: echoed!";
    assert_eq!(body["content"], json!([{"type": "text", "text": text}]));
    assert_eq!(
        body["usage"]["output_tokens"],
        json!(expected_usage(&second, &body["content"]).output_tokens)
    );
}

#[tokio::test]
async fn default_stand_in_web_fetch_and_direct_answers() {
    let s = start().await;
    let ask = |text: &str, tools: &[&str]| {
        with_tools(request(json!([{"role": "user", "content": text}])), tools)
    };
    let (_, _, body) = s
        .post(&ask(
            "Summarise https://example.com/page?a=1.",
            &["web_fetch"],
        ))
        .await;
    assert_eq!(
        body["content"][1]["input"],
        json!({"url": "https://example.com/page?a=1"})
    );
    let (_, _, body) = s.post(&ask("no link here", &["web_fetch"])).await;
    assert_eq!(
        body["content"][0]["text"],
        json!("[agentq stand-in model, not Claude] You asked: no link here.")
    );
    let long = "é".repeat(250);
    let (_, _, body) = s
        .post(&request(json!([{"role": "user", "content": long}])))
        .await;
    let want = format!(
        "[agentq stand-in model, not Claude] You asked: {}.",
        "é".repeat(200)
    );
    assert_eq!(
        (&body["content"][0]["text"], &body["stop_reason"]),
        (&json!(want), &json!("end_turn"))
    );
}

#[tokio::test]
async fn refused_calls_are_recorded_in_order() {
    let s = start().await;
    let (status, _, _) = s
        .send(&[("anthropic-version", "2023-06-01")], "{}".to_owned())
        .await;
    assert_eq!(status, 401);
    let (status, _, body) = s
        .send(
            &[("x-api-key", "k"), ("anthropic-version", "2023-06-01")],
            "not json".to_owned(),
        )
        .await;
    assert_eq!(
        (status, &body["error"]["type"]),
        (400, &json!("invalid_request_error"))
    );
    let (status, _, _) = s
        .post(&request(json!([{"role": "user", "content": "fine"}])))
        .await;
    assert_eq!(status, 200);
    let calls = s.llm.calls();
    assert_eq!(
        calls.iter().map(|c| c.status).collect::<Vec<_>>(),
        vec![401, 400, 200]
    );
    assert_eq!(calls[0].request, json!({}));
    assert_eq!(
        calls[0].response["error"]["type"],
        json!("authentication_error")
    );
    assert_eq!(calls[1].request, Value::Null);
    assert_eq!((calls[1].usage, calls[2].usage.is_some()), (None, true));
    assert_eq!(calls[2].response["content"][0]["type"], json!("text"));
    assert!(
        calls[0].received_at <= calls[1].received_at
            && calls[1].received_at <= calls[2].received_at
    );
    assert_eq!(s.llm.calls_for("fine").len(), 1);
}

#[tokio::test]
async fn healthz_and_unknown_paths() {
    let s = start().await;
    let resp = reqwest::get(format!("{}/healthz", s.base)).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("request-id"));
    assert_eq!(resp.text().await.unwrap(), "ok");
    let resp = reqwest::get(format!("{}/v1/nothing", s.base))
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], json!("not_found_error"));
    assert!(s.llm.calls().is_empty());
}
