//! A session's webhook messages: each event agentq POSTed (or is still trying to POST) to the
//! session's webhook URL, with every attempt and how it went. The worker's sender
//! (`worker/src/webhooks.rs`) makes the attempts; this only reads them.

use agentq_shared::schemas::WebhookDeliveryList;
use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};

use crate::AppState;
use crate::auth::Auth;
use crate::error::{ApiError, ErrorBody, path_rejection};
use crate::routes::agents::{owned, session_id};

/// The session's webhook messages and their delivery attempts.
///
/// One message per event: `session.awaiting_approval` each time the session waits for a human,
/// and one of `session.completed`, `session.failed`, `session.cancelled` when it ends, sent to
/// the run's `webhook_url` (else the org's default). Each lists every attempt: the receiver's
/// HTTP status or why there was none. Oldest first; empty when the session has no webhook URL.
#[utoipa::path(get, path = "/v1/agents/{id}/webhooks", tag = "sessions",
    operation_id = "list_session_webhooks",
    params(("id" = String, Path, description = "The session id")),
    responses(
        (status = 200, description = "The session's webhook messages", body = WebhookDeliveryList),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 429, description = "`rate_limited`: the org is over its API rate limit",
            body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))),
        (status = 404, description = "`not_found` (also for another org's session)",
            body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Auth(principal): Auth,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<WebhookDeliveryList>, ApiError> {
    let Path(id) = path.map_err(path_rejection)?;
    let id = session_id(&id)?;
    owned(&state, principal.org_id, id).await?;
    let deliveries = state.store.webhook_deliveries(id).await?;
    Ok(Json(WebhookDeliveryList { deliveries }))
}
