//! The HTTP side: the `/v1/messages` handler, responses, ids.

use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rand::Rng as _;
use rand::distr::Alphanumeric;
use serde_json::{Value, json};

use super::{FakeLlm, RecordedCall, Usage, conversation, validate};

/// What the server is about to answer.
pub(super) struct Reply {
    pub(super) status: u16,
    pub(super) body: Value,
    pub(super) usage: Option<Usage>,
    pub(super) retry_after: Option<u64>,
    pub(super) delay: Option<Duration>,
}

impl Reply {
    pub(super) fn error(status: u16, error_type: &str, message: &str) -> Self {
        Reply {
            status,
            body: json!({"type": "error", "error": {"type": error_type, "message": message}}),
            usage: None,
            retry_after: None,
            delay: None,
        }
    }

    pub(super) fn message(
        request: &Value,
        content: Vec<Value>,
        stop_reason: &str,
        usage: Option<Usage>,
    ) -> Self {
        let content = Value::Array(content);
        let usage = usage.unwrap_or_else(|| conversation::default_usage(request, &content));
        let body = json!({
            "id": random_id("msg_01", 22),
            "type": "message",
            "role": "assistant",
            "model": request.get("model").cloned().unwrap_or(Value::Null),
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": null,
            "usage": usage.to_json(),
        });
        Reply {
            status: 200,
            body,
            usage: Some(usage),
            retry_after: None,
            delay: None,
        }
    }

    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, axum::Json(self.body)).into_response();
        let headers = response.headers_mut();
        if let Ok(id) = HeaderValue::from_str(&random_id("req_011", 21)) {
            headers.insert("request-id", id);
        }
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

pub(super) async fn handle_messages(
    State(llm): State<FakeLlm>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let received_at = Instant::now();
    let parsed = serde_json::from_slice::<Value>(&body).map_err(|e| e.to_string());
    let reply = match validate::check(&headers, &parsed) {
        Ok(request) => llm.answer(request),
        Err(err) => Reply::error(err.status, err.error_type, &err.message),
    };
    let request = parsed.unwrap_or(Value::Null);
    tracing::debug!(status = reply.status, "stand-in LLM call");
    // Recorded before any scripted delay, so that a client which times out still leaves a trace.
    {
        let mut inner = llm.lock();
        if !inner.unrecorded {
            inner.calls.push(RecordedCall {
                status: reply.status,
                request,
                response: reply.body.clone(),
                usage: reply.usage,
                received_at,
            });
        }
    }
    if let Some(delay) = reply.delay {
        tokio::time::sleep(delay).await;
    }
    reply.into_response()
}

pub(super) async fn not_found() -> Response {
    Reply::error(404, "not_found_error", "Not found").into_response()
}

/// Every response carries a `request-id` header, including axum's own 405/413 answers.
pub(super) async fn ensure_request_id(mut response: Response) -> Response {
    if !response.headers().contains_key("request-id")
        && let Ok(id) = HeaderValue::from_str(&random_id("req_011", 21))
    {
        response.headers_mut().insert("request-id", id);
    }
    response
}

/// `prefix` followed by `len` random alphanumeric characters, like the real API's ids.
pub(super) fn random_id(prefix: &str, len: usize) -> String {
    let tail: String = rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect();
    format!("{prefix}{tail}")
}
