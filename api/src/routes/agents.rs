//! Agent sessions: start one, read it, cancel it. The API never calls an LLM or runs a tool: it
//! writes the session row, enqueues step 0 and reads what workers write.

use agentq_shared::queue::{self, StepJob};
use agentq_shared::schemas::{
    AgentRunRequest, AgentRunResponse, AgentSession, SessionError, SessionStatus,
};
use agentq_shared::store::CancelOutcome;
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use uuid::Uuid;

use crate::AppState;
use crate::auth::Auth;
use crate::error::{ApiError, json_rejection};

pub async fn run(
    State(state): State<AppState>,
    Auth(principal): Auth,
    body: Result<Json<AgentRunRequest>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(request) = body.map_err(json_rejection)?;
    let run = request
        .validate(&state.tool_names(), &state.config.default_model)
        .map_err(ApiError::Validation)?;
    let id = Uuid::now_v7();
    state
        .store
        .insert_session(id, principal.org_id, &run)
        .await?;
    state.store.refresh_snapshot(id).await?;
    if let Err(e) = queue::enqueue(
        &state.queue,
        StepJob {
            session_id: id,
            step: 0,
        },
    )
    .await
    {
        tracing::error!(session_id = %id, error = %e, "cannot enqueue the first step");
        let error = SessionError {
            code: "queue_unavailable".into(),
            message: "the job queue could not be reached when the session was created".into(),
        };
        state
            .store
            .finish_session(id, SessionStatus::Failed, None, Some(&error))
            .await?;
        state.store.refresh_snapshot(id).await?;
        return Err(ApiError::client(
            StatusCode::SERVICE_UNAVAILABLE,
            "queue_unavailable",
            "the job queue is unavailable; try again shortly",
        ));
    }
    tracing::info!(session_id = %id, org_id = %principal.org_id, model = %run.model, "session created");
    let poll_url = format!("/v1/agents/{id}");
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, poll_url.clone())],
        Json(AgentRunResponse {
            session_id: id,
            status: SessionStatus::Pending,
            poll_url,
        }),
    ))
}

/// A session of another org answers 404, exactly like a missing one.
async fn owned_session(state: &AppState, org_id: Uuid, id: &str) -> Result<AgentSession, ApiError> {
    let not_found = || ApiError::not_found("session");
    let id = Uuid::parse_str(id).map_err(|_| not_found())?;
    match state.store.session_view(id).await? {
        Some(session) if session.org_id == org_id => Ok(session),
        _ => Err(not_found()),
    }
}

pub async fn get(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> Result<Json<AgentSession>, ApiError> {
    Ok(Json(owned_session(&state, principal.org_id, &id).await?))
}

pub async fn cancel(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let session_id = Uuid::parse_str(&id).map_err(|_| ApiError::not_found("session"))?;
    match state
        .store
        .request_cancel(session_id, principal.org_id)
        .await?
    {
        CancelOutcome::Requested => {
            tracing::info!(%session_id, "cancel requested");
            let session = state
                .store
                .refresh_snapshot(session_id)
                .await?
                .ok_or_else(|| ApiError::not_found("session"))?;
            Ok((StatusCode::ACCEPTED, Json(session)))
        }
        CancelOutcome::AlreadyFinished(status) => Err(ApiError::client(
            StatusCode::CONFLICT,
            "session_finished",
            &format!("the session already finished ({status}); there is nothing to cancel"),
        )),
        CancelOutcome::NotFound => Err(ApiError::not_found("session")),
    }
}
