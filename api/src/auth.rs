//! `Authorization: Bearer <key>`: the key belongs to an org, and every handler sees only that
//! org's sessions. Each request then counts against the org's rate limit (`limits.rs`).

use agentq_shared::store::Principal;
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use crate::AppState;
use crate::error::ApiError;

/// The authenticated caller.
pub struct Auth(pub Principal);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts.headers.get(AUTHORIZATION).ok_or_else(|| {
            ApiError::unauthorized(
                "missing Authorization header; send `Authorization: Bearer <api key>`",
            )
        })?;
        let key = header
            .to_str()
            .ok()
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|key| !key.is_empty())
            .ok_or_else(|| {
                ApiError::unauthorized("Authorization header must be `Bearer <api key>`")
            })?;
        let principal = state
            .store
            .authenticate(key)
            .await?
            .ok_or_else(|| ApiError::unauthorized("invalid or revoked API key"))?;
        state
            .limits
            .check(&principal)
            .map_err(|retry_after| ApiError::RateLimited { retry_after })?;
        Ok(Auth(principal))
    }
}
