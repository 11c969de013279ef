use agentq_shared::tools::ToolDefinition;
use axum::Json;
use axum::extract::State;
use serde::Serialize;

use crate::AppState;
use crate::auth::Auth;
use crate::error::ApiError;

#[derive(Serialize)]
pub struct ToolList {
    tools: Vec<ToolDefinition>,
}

pub async fn list(State(state): State<AppState>, _auth: Auth) -> Result<Json<ToolList>, ApiError> {
    Ok(Json(ToolList {
        tools: state.tools.as_ref().clone(),
    }))
}
