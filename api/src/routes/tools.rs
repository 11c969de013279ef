use agentq_shared::tools::ToolDefinition;
use axum::Json;
use axum::extract::State;
use serde::Serialize;

use crate::AppState;
use crate::auth::Auth;
use crate::error::{ApiError, ErrorBody};

#[derive(Serialize, utoipa::ToSchema)]
pub struct ToolList {
    tools: Vec<ToolDefinition>,
}

/// The tools this deployment offers, with their JSON Schemas.
#[utoipa::path(get, path = "/v1/tools", tag = "tools", operation_id = "list_tools",
    responses(
        (status = 200, description = "The tools", body = ToolList),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 429, description = "`rate_limited`: the org is over its API rate limit",
            body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))),
    ),
    security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>, _auth: Auth) -> Result<Json<ToolList>, ApiError> {
    Ok(Json(ToolList {
        tools: state.tools.as_ref().clone(),
    }))
}
