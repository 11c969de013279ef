//! Agent sessions: start one, list them, read one (or wait for its next change), cancel it,
//! decide its approvals. The API never calls an
//! LLM or runs a tool: it writes the session, enqueues step 0 and reads what workers write.

use std::time::Duration;

use agentq_shared::queue::{Push, START_AT_ONCE, StepJob};
use agentq_shared::schemas::{
    AgentRunRequest, AgentRunResponse, AgentSession, ApprovalRequest, FieldError, NUL_MESSAGE,
    RunDefaults, SessionList, SessionStatus, ValidatedRun,
};
use agentq_shared::store::{
    ApprovalDecision, ApprovalOutcome, CancelOutcome, Created, IdempotencyKey, ListQuery,
    NewSession, Principal, sha256_hex,
};
use agentq_shared::telemetry;
use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use tracing::Instrument;
use uuid::Uuid;

use crate::AppState;
use crate::auth::Auth;
use crate::error::{ApiError, ErrorBody, json_rejection, path_rejection, query_rejection};

const IDEMPOTENCY_KEY: &str = "idempotency-key";
const MAX_IDEMPOTENCY_KEY: usize = 255;
const MAX_REASON: usize = 2000;

/// The `Idempotency-Key` header with the hash of the request it came with.
fn idempotency_key(
    headers: &HeaderMap,
    request: &AgentRunRequest,
) -> Result<Option<IdempotencyKey>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY)
        .ok_or_else(|| {
            ApiError::client(
                StatusCode::BAD_REQUEST,
                "invalid_idempotency_key",
                "Idempotency-Key must be 1 to 255 visible ASCII characters",
            )
        })?;
    // serde_json sorts object keys, so the same request hashes the same however it was written.
    let canonical = serde_json::to_vec(&serde_json::to_value(request)?)?;
    Ok(Some(IdempotencyKey {
        key: key.to_owned(),
        request_hash: sha256_hex(&canonical),
    }))
}

/// Start an agent session.
///
/// The session is written and its first step queued; workers run it. Poll it at `poll_url`,
/// follow its events, or long-poll it. With an `Idempotency-Key`, the same key and request
/// return the same session (200); the key with another request is refused (409).
#[utoipa::path(post, path = "/v1/agents/run", tag = "sessions",
    params(("Idempotency-Key" = Option<String>, Header,
        description = "Makes the create safe to retry: 1 to 255 visible characters, kept 48 h")),
    request_body = AgentRunRequest,
    responses(
        (status = 202, description = "Started", body = AgentRunResponse,
            headers(("Location" = String, description = "The session's URL"))),
        (status = 200, description = "The session this Idempotency-Key already started",
            body = AgentRunResponse),
        (status = 400, description = "`malformed_json`, `invalid_idempotency_key`, or \
            `invalid_webhook_url`: not an http(s) URL, longer than 2048 bytes, or refused by the \
            SSRF policy (a private or loopback address not opened by `AGENTQ_WEB_FETCH_ALLOW`)",
            body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 429, description = "`rate_limited`: the org is over its API rate limit",
            body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))),
        (status = 429, description = "`concurrency_limited`: the org runs as many sessions as \
            it may and the request asked `\"if_busy\": \"reject\"`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: send application/json",
            body = ErrorBody),
        (status = 422, description = "`invalid_request`, naming each bad field", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn run(
    State(state): State<AppState>,
    Auth(principal): Auth,
    headers: HeaderMap,
    body: Result<Json<AgentRunRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = body.map_err(json_rejection)?;
    let idempotency = idempotency_key(&headers, &request)?;
    let run = request
        .validate(
            &state.tool_names(),
            &RunDefaults {
                model: state.config.default_model.clone(),
                react_mode: state.config.react_mode,
            },
        )
        .map_err(ApiError::Validation)?;
    if let Some(url) = &run.webhook_url {
        agentq_shared::webhooks::check_url(&state.webhook_policy, url).map_err(|message| {
            ApiError::client(StatusCode::BAD_REQUEST, "invalid_webhook_url", &message)
        })?;
    }
    let id = Uuid::now_v7();
    // The session's trace starts here; every step's span joins it.
    let span = tracing::info_span!("session", session_id = %id, trace_id = tracing::field::Empty);
    telemetry::record_trace_id(&span);
    create(state, principal, run, idempotency, id)
        .instrument(span)
        .await
}

async fn create(
    state: AppState,
    principal: Principal,
    run: ValidatedRun,
    idempotency: Option<IdempotencyKey>,
    id: Uuid,
) -> Result<Response, ApiError> {
    let model = run.model.clone();
    let mut new = NewSession::now(
        id,
        principal.org_id,
        run,
        state.config.session_deadline,
        idempotency,
    );
    new.traceparent = telemetry::traceparent(&tracing::Span::current());
    new.max_active = principal
        .active_cap
        .unwrap_or(state.config.org_max_active_sessions)
        .limit();
    let traceparent = new.traceparent.clone();
    let status = match state.store.create_session(new).await? {
        Created::New => SessionStatus::Pending,
        Created::Queued => SessionStatus::Queued,
        Created::Busy => {
            return Err(ApiError::client(
                StatusCode::TOO_MANY_REQUESTS,
                "concurrency_limited",
                "this org already runs as many sessions as it may at once; retry when one \
                 ends, or send \"if_busy\": \"queue\" to wait in line",
            ));
        }
        Created::Existing(existing) => {
            let session = state
                .store
                .session(existing)
                .await?
                .ok_or_else(|| ApiError::not_found("session"))?;
            let response = AgentRunResponse {
                session_id: existing,
                status: session.status,
                poll_url: format!("/v1/agents/{existing}"),
            };
            return Ok((StatusCode::OK, Json(response)).into_response());
        }
        Created::KeyReused => {
            return Err(ApiError::client(
                StatusCode::CONFLICT,
                "idempotency_key_reused",
                "this Idempotency-Key was already used with a different request",
            ));
        }
    };
    // A queued session's first step is queued when it gets a slot.
    if status == SessionStatus::Pending {
        let first = StepJob::new(id, 0, traceparent).of_org(principal.org_id);
        if let Err(e) = state.queue.push(first, Push::Next).await {
            // The session is safe in the store: the reconciler enqueues it once Redis answers
            // again.
            tracing::warn!(session_id = %id, error = %e, "cannot enqueue the first step yet; the reconciler will");
        }
    }
    metrics::counter!("agentq_sessions_started_total").increment(1);
    tracing::info!(session_id = %id, org_id = %principal.org_id, %model, %status, "session created");
    let poll_url = format!("/v1/agents/{id}");
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, poll_url.clone())],
        Json(AgentRunResponse {
            session_id: id,
            status,
            poll_url,
        }),
    )
        .into_response())
}

/// A session id from the path; one that doesn't parse is simply not found.
pub(crate) fn session_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| ApiError::not_found("session"))
}

/// The session, if it is this org's: a session of another org answers 404, exactly like a
/// missing one.
pub(crate) async fn owned(
    state: &AppState,
    org_id: Uuid,
    id: Uuid,
) -> Result<AgentSession, ApiError> {
    match state.store.session(id).await? {
        Some(session) if session.org_id == org_id => Ok(session),
        _ => Err(ApiError::not_found("session")),
    }
}

/// The longest a long-poll waits.
pub const MAX_WAIT_SECS: u64 = 60;

#[derive(Debug, Deserialize)]
pub struct GetQuery {
    /// Long-poll: wait up to this many seconds (at most 60) for a change.
    pub wait: Option<String>,
    /// With `wait`: answer once the session has a step after this one.
    pub after_step: Option<String>,
}

/// The session (an `AgentSession`). Without `wait`, it is passed through as the store holds it.
/// With `wait=S`, the answer comes as soon as the session has a step after `after_step` or a
/// status other than the one it had when the call came (at once when it has finished), else
/// after S seconds with the session as it is.
#[utoipa::path(get, path = "/v1/agents/{id}", tag = "sessions",
    params(
        ("id" = String, Path, description = "The session id"),
        ("wait" = Option<u32>, Query, maximum = 60,
            description = "Long-poll: wait up to this many seconds (0 to 60) for a change"),
        ("after_step" = Option<u32>, Query,
            description = "With `wait`: answer once the session has a step after this one"),
    ),
    responses(
        (status = 200, description = "The session", body = AgentSession),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 429, description = "`rate_limited`: the org is over its API rate limit",
            body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))),
        (status = 404, description = "`not_found` (also for another org's session)",
            body = ErrorBody),
        (status = 422, description = "`invalid_request`: a bad `wait` or `after_step`",
            body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Auth(principal): Auth,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<GetQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = path.map_err(path_rejection)?;
    let Query(query) = query.map_err(query_rejection)?;
    let id = session_id(&id)?;
    let wait = match query.wait.as_deref() {
        None => None,
        Some(wait) => Some(
            wait.trim()
                .parse::<u64>()
                .ok()
                .filter(|w| *w <= MAX_WAIT_SECS)
                .ok_or_else(|| {
                    ApiError::invalid("wait", "must be a whole number of seconds from 0 to 60")
                })?,
        ),
    };
    let after_step = match query.after_step.as_deref() {
        None => None,
        Some(n) => Some(n.trim().parse::<u32>().map_err(|_| {
            ApiError::invalid(
                "after_step",
                "must be a step index (a whole number, 0 or more)",
            )
        })?),
    };
    let Some(wait) = wait else {
        return match state.store.session_json(id).await? {
            Some((org_id, json)) if org_id == principal.org_id => {
                Ok(([(header::CONTENT_TYPE, "application/json")], json).into_response())
            }
            _ => Err(ApiError::not_found("session")),
        };
    };
    let session = long_poll(&state, principal.org_id, id, wait, after_step).await?;
    Ok(Json(session).into_response())
}

async fn long_poll(
    state: &AppState,
    org_id: Uuid,
    id: Uuid,
    wait: u64,
    after_step: Option<u32>,
) -> Result<AgentSession, ApiError> {
    // Listen before reading, so a change between the two is not missed.
    let mut feed = state.store.changes(id);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    let first = owned(state, org_id, id).await?;
    let ready = |s: &AgentSession| {
        s.status.is_terminal()
            || s.status != first.status
            || after_step.is_some_and(|n| s.steps.iter().any(|step| step.index > n))
    };
    let mut session = first.clone();
    while !ready(&session) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            break;
        }
        let pause = left.min(Duration::from_secs(1));
        match &mut feed {
            Some(feed) => {
                let _ = tokio::time::timeout(pause, feed.changed()).await;
            }
            None => tokio::time::sleep(pause.min(Duration::from_millis(250))).await,
        }
        session = owned(state, org_id, id).await?;
    }
    Ok(session)
}

/// The largest page of `GET /v1/agents`.
pub const MAX_PAGE: u32 = 100;

#[derive(Debug, Deserialize)]
pub struct ListParams {
    pub status: Option<String>,
    pub limit: Option<String>,
    pub cursor: Option<String>,
}

/// List the org's sessions, newest first, a page at a time.
#[utoipa::path(get, path = "/v1/agents", tag = "sessions", operation_id = "list_sessions",
    params(
        ("status" = Option<SessionStatus>, Query, description = "Only sessions in this status"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100,
            description = "Sessions per page (1 to 100, default 20)"),
        ("cursor" = Option<String>, Query,
            description = "The `next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "A page", body = SessionList),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 429, description = "`rate_limited`: the org is over its API rate limit",
            body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))),
        (status = 422, description = "`invalid_request`: a bad status, limit or cursor",
            body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Auth(principal): Auth,
    query: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<SessionList>, ApiError> {
    let Query(params) = query.map_err(query_rejection)?;
    let status = match params.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(SessionStatus::parse(s.trim()).ok_or_else(|| {
            ApiError::invalid(
                "status",
                "must be one of pending, running, awaiting_approval, completed, failed, cancelled",
            )
        })?),
    };
    let limit = match params.limit.as_deref() {
        None => 20,
        Some(l) => l
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|l| (1..=MAX_PAGE).contains(l))
            .ok_or_else(|| ApiError::invalid("limit", "must be a whole number from 1 to 100"))?,
    };
    let after = match params.cursor.as_deref() {
        None | Some("") => None,
        Some(cursor) => Some(
            decode_cursor(cursor)
                .ok_or_else(|| ApiError::invalid("cursor", "is not a cursor this API gave"))?,
        ),
    };
    let sessions = state
        .store
        .list_sessions(&ListQuery {
            org_id: principal.org_id,
            status,
            limit,
            after,
        })
        .await?;
    let next_cursor = (sessions.len() == limit as usize)
        .then(|| {
            sessions
                .last()
                .map(|s| encode_cursor(s.created_at, s.session_id))
        })
        .flatten();
    Ok(Json(SessionList {
        sessions,
        next_cursor,
    }))
}

/// A cursor is the last session of a page (its creation time in microseconds and its id),
/// opaque to clients.
fn encode_cursor(created_at: DateTime<Utc>, id: Uuid) -> String {
    hex::encode(format!("{}.{}", created_at.timestamp_micros(), id.simple()))
}

fn decode_cursor(cursor: &str) -> Option<(DateTime<Utc>, Uuid)> {
    let text = String::from_utf8(hex::decode(cursor.trim()).ok()?).ok()?;
    let (micros, id) = text.split_once('.')?;
    Some((
        DateTime::from_timestamp_micros(micros.parse().ok()?)?,
        Uuid::parse_str(id).ok()?,
    ))
}

/// Cancel a session.
///
/// A session no worker is running (awaiting approval, between steps) is cancelled at once;
/// a running one stops at its worker's next check (its LLM call or tool is dropped).
#[utoipa::path(post, path = "/v1/agents/{id}/cancel", tag = "sessions",
    params(("id" = String, Path, description = "The session id")),
    responses(
        (status = 202, description = "Cancelled, or being cancelled", body = AgentSession),
        (status = 200, description = "Already cancelled", body = AgentSession),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 429, description = "`rate_limited`: the org is over its API rate limit",
            body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`session_finished`: it completed or failed",
            body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn cancel(
    State(state): State<AppState>,
    Auth(principal): Auth,
    path: Result<Path<String>, PathRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Path(id) = path.map_err(path_rejection)?;
    let session_id = session_id(&id)?;
    let (outcome, session) = state
        .store
        .request_cancel(session_id, principal.org_id)
        .await?;
    let session = || {
        session
            .clone()
            .ok_or_else(|| ApiError::not_found("session"))
    };
    if outcome == CancelOutcome::Cancelled {
        state
            .queue
            .start_queued(&state.store, Some(principal.org_id), START_AT_ONCE)
            .await;
    }
    match outcome {
        CancelOutcome::Requested | CancelOutcome::Cancelled => {
            tracing::info!(%session_id, ?outcome, "cancel requested");
            Ok((StatusCode::ACCEPTED, Json(session()?)))
        }
        // Cancelling twice is fine: the answer is the cancelled session.
        CancelOutcome::AlreadyFinished(SessionStatus::Cancelled) => {
            Ok((StatusCode::OK, Json(session()?)))
        }
        CancelOutcome::AlreadyFinished(status) => Err(ApiError::client(
            StatusCode::CONFLICT,
            "session_finished",
            &format!("the session already finished ({status}); there is nothing to cancel"),
        )),
        CancelOutcome::NotFound => Err(ApiError::not_found("session")),
    }
}

/// Approve or reject the tool calls a session waits on.
///
/// One decision covers every call of the turn (`pending_approval.calls`); the step runs
/// again. A rejection refuses the calls that need approval; the agent observes it.
#[utoipa::path(post, path = "/v1/agents/{id}/approve", tag = "sessions",
    params(("id" = String, Path, description = "The session id")),
    request_body = ApprovalRequest,
    responses(
        (status = 202, description = "Recorded; the step runs again", body = AgentSession),
        (status = 400, description = "`malformed_json`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 429, description = "`rate_limited`: the org is over its API rate limit",
            body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`not_awaiting_approval` or `approval_expired`",
            body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 422, description = "`invalid_request`", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn approve(
    State(state): State<AppState>,
    Auth(principal): Auth,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<ApprovalRequest>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Path(id) = path.map_err(path_rejection)?;
    let Json(request) = body.map_err(json_rejection)?;
    let reason_problem = match request.reason.as_deref() {
        Some(r) if r.len() > MAX_REASON => Some(format!("must be at most {MAX_REASON} bytes")),
        Some(r) if r.contains('\0') => Some(NUL_MESSAGE.to_owned()),
        _ => None,
    };
    if let Some(message) = reason_problem {
        return Err(ApiError::Validation(vec![FieldError {
            field: "reason".into(),
            message,
        }]));
    }
    let session_id = session_id(&id)?;
    let decision = ApprovalDecision {
        session_id,
        step: request.step,
        org_id: principal.org_id,
        decided_by: Some(principal.key_id),
        on_timeout: false,
        approved: request.approved,
        reason: request.reason,
    };
    let (outcome, session) = state.store.decide_approval(&decision).await?;
    let traceparent = match outcome {
        ApprovalOutcome::Recorded { traceparent } => traceparent,
        ApprovalOutcome::NotFound => return Err(ApiError::not_found("session")),
        ApprovalOutcome::Conflict(message) => {
            return Err(ApiError::client(
                StatusCode::CONFLICT,
                "not_awaiting_approval",
                &message,
            ));
        }
        ApprovalOutcome::Expired => {
            // The session may just have failed `approval_expired`, freeing its slot.
            state
                .queue
                .start_queued(&state.store, Some(principal.org_id), START_AT_ONCE)
                .await;
            return Err(ApiError::client(
                StatusCode::CONFLICT,
                "approval_expired",
                "the approval window closed; the session's on_approval_timeout applies \
                 (by default it fails)",
            ));
        }
    };
    tracing::info!(%session_id, step = request.step, approved = request.approved, key_id = %principal.key_id, "approval recorded");
    let job = StepJob::new(session_id, request.step, traceparent).of_org(principal.org_id);
    if let Err(e) = state.queue.push(job, Push::Resume).await {
        // The decision is recorded: the reconciler enqueues the step once Redis answers again.
        tracing::warn!(%session_id, error = %e, "cannot enqueue the approved step yet; the reconciler will");
    }
    let session = session.ok_or_else(|| ApiError::not_found("session"))?;
    Ok((StatusCode::ACCEPTED, Json(session)))
}
