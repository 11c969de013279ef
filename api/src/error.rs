//! The one API error type. Client errors carry a stable `code` and a safe message; `Internal`
//! is logged with its whole chain and answered as an opaque 500, so no database or Redis text
//! ever reaches a client. Every error body is `{"error": {"code", "message"}}`.

use agentq_shared::schemas::FieldError;
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug)]
pub enum ApiError {
    Client {
        status: StatusCode,
        code: &'static str,
        message: String,
    },
    /// 422 with one entry per invalid field.
    Validation(Vec<FieldError>),
    /// 429: the org is over its rate limit; `Retry-After` says when to come back.
    RateLimited {
        retry_after: std::time::Duration,
    },
    Internal(anyhow::Error),
}

impl ApiError {
    pub fn unauthorized(message: &str) -> Self {
        Self::client(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn not_found(what: &str) -> Self {
        Self::client(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("{what} not found"),
        )
    }

    /// 422 naming one field.
    pub fn invalid(field: &str, message: &str) -> Self {
        Self::Validation(vec![FieldError {
            field: field.to_owned(),
            message: message.to_owned(),
        }])
    }

    pub fn client(status: StatusCode, code: &'static str, message: &str) -> Self {
        Self::Client {
            status,
            code,
            message: message.to_owned(),
        }
    }
}

impl<E: Into<anyhow::Error>> From<E> for ApiError {
    fn from(e: E) -> Self {
        Self::Internal(e.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match self {
            Self::Client {
                status,
                code,
                message,
            } => (status, json!({"error": {"code": code, "message": message}})),
            Self::Validation(errors) => {
                let message = errors
                    .iter()
                    .map(|e| format!("{}: {}", e.field, e.message))
                    .collect::<Vec<_>>()
                    .join("; ");
                (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    json!({"error": {"code": "invalid_request", "message": message, "fields": errors}}),
                )
            }
            Self::RateLimited { retry_after } => {
                // Whole seconds, rounded up: a client that waits that long gets through.
                let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                let seconds = seconds.max(1);
                let body = json!({"error": {"code": "rate_limited", "message":
                    format!("this org is over its API rate limit; retry in {seconds} s")}});
                let mut response = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
                response.headers_mut().insert(
                    axum::http::header::RETRY_AFTER,
                    axum::http::HeaderValue::from(seconds),
                );
                return response;
            }
            Self::Internal(e) => {
                tracing::error!(error = ?e, "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({"error": {"code": "internal", "message": "internal error; see the server log"}}),
                )
            }
        };
        (status, Json(body)).into_response()
    }
}

/// The error body, for the API description (the responses are built in `into_response`).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ErrorDetail {
    /// Stable and machine-readable: `unauthorized`, `not_found`, `invalid_request`,
    /// `malformed_json`, `unsupported_media_type`, `payload_too_large`,
    /// `invalid_idempotency_key`, `idempotency_key_reused`, `invalid_webhook_url`,
    /// `session_finished`, `not_awaiting_approval`, `approval_expired`, `method_not_allowed`,
    /// `rate_limited`, `concurrency_limited`, `internal`.
    pub code: String,
    pub message: String,
    /// With `invalid_request`: one entry per invalid field.
    #[schema(nullable = false)]
    pub fields: Option<Vec<FieldError>>,
}

/// A path that does not name a session is simply not found.
pub fn path_rejection(_: axum::extract::rejection::PathRejection) -> ApiError {
    ApiError::not_found("session")
}

/// A query string that cannot be read.
pub fn query_rejection(rejection: axum::extract::rejection::QueryRejection) -> ApiError {
    ApiError::invalid("query", &rejection.body_text())
}

/// Maps axum's JSON rejections onto our error shape.
pub fn json_rejection(rejection: JsonRejection) -> ApiError {
    let (status, code) = match &rejection {
        JsonRejection::JsonDataError(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
        JsonRejection::JsonSyntaxError(_) => (StatusCode::BAD_REQUEST, "malformed_json"),
        JsonRejection::MissingJsonContentType(_) => {
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
        }
        _ if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
        }
        _ => (rejection.status(), "bad_request"),
    };
    ApiError::client(status, code, &rejection.body_text())
}
