//! `GET /v1/agents/{id}/events`: a session's events as Server-Sent Events, live.
//!
//! Every event is stored with the transition that made it, numbered 1, 2, 3, ... per session;
//! the number is the SSE `id`. A client that reconnects with `Last-Event-ID` (or `?after=`)
//! gets every event after that one, from Postgres, so a dropped connection or an API restart
//! loses nothing and repeats nothing, whichever API process it reconnects to. New events are
//! read when the session's change notification arrives (from whichever process made the
//! change), and every few seconds regardless. A comment line keeps the connection alive every
//! 15 s; the stream ends after the `done` event.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use agentq_shared::schemas::{EventKind, SessionEvent};
use agentq_shared::store::{ChangeFeed, Store};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde::Deserialize;
use uuid::Uuid;

use crate::AppState;
use crate::auth::Auth;
use crate::error::{ApiError, ErrorBody, path_rejection, query_rejection};
use crate::routes::agents::{owned, session_id};

const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Read again this often even without a notification (a missed one, or no hot copy).
const REREAD: Duration = Duration::from_secs(2);

/// One Server-Sent Event of the stream, as the API description gives it.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct SseEvent {
    /// The event's number in the session (`SessionEvent.seq`): resume after it with
    /// `Last-Event-ID`.
    pub id: String,
    /// Its kind: `status`, `step`, `approval` or `done`.
    #[schema(pattern = "^(status|step|approval|done)$")]
    pub event: String,
    /// A `SessionEvent`, as JSON.
    #[schema(content_media_type = "application/json")]
    pub data: String,
}

#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    /// Resume after this event (as `Last-Event-ID`).
    pub after: Option<String>,
}

fn after_from(headers: &HeaderMap, query: &EventsQuery) -> Result<i64, ApiError> {
    let header = headers
        .get("last-event-id")
        .map(|v| v.to_str().unwrap_or("invalid").trim().to_owned());
    let (field, value) = match (&query.after, header) {
        (Some(after), _) => ("after", after.trim().to_owned()),
        (None, Some(header)) => ("Last-Event-ID", header),
        (None, None) => return Ok(0),
    };
    value
        .parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .ok_or_else(|| {
            ApiError::invalid(
                field,
                "must be the id of an event (a whole number, 0 or more)",
            )
        })
}

/// Follow a session's events (Server-Sent Events).
///
/// Each event: `id` its number in the session (1, 2, 3, ...), `event` its kind (`status`,
/// `step`, `approval`, `done`), `data` a `SessionEvent` as JSON. Resume after a dropped
/// connection with `Last-Event-ID` (or `after`). A comment line every 15 s keeps the
/// connection alive; the stream ends after `done`.
#[utoipa::path(get, path = "/v1/agents/{id}/events", tag = "sessions",
    params(
        ("id" = String, Path, description = "The session id"),
        ("after" = Option<u64>, Query, description = "Resume after this event"),
        ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this event"),
    ),
    responses(
        (status = 200, description = "The events, as they happen", content_type = "text/event-stream",
            body = SseEvent),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 429, description = "`rate_limited`: the org is over its API rate limit",
            body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 422, description = "`invalid_request`: a bad `after` or `Last-Event-ID`",
            body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn stream(
    State(state): State<AppState>,
    Auth(principal): Auth,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<EventsQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let Path(id) = path.map_err(path_rejection)?;
    let Query(query) = query.map_err(query_rejection)?;
    let id = session_id(&id)?;
    let after = after_from(&headers, &query)?;
    owned(&state, principal.org_id, id).await?;
    let follow = Follow {
        store: state.store.clone(),
        feed: state.store.changes(id),
        id,
        after,
        pending: VecDeque::new(),
        done: false,
        ended: false,
    };
    let events = futures::stream::unfold(follow, |mut follow| async move {
        let event = follow.next().await?;
        Some((Ok(event), follow))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive")))
}

/// One client's position in a session's events.
struct Follow {
    store: Store,
    feed: Option<ChangeFeed>,
    id: Uuid,
    after: i64,
    pending: VecDeque<SessionEvent>,
    done: bool,
    /// The session was seen ended before an events read: that read had every event left.
    ended: bool,
}

impl Follow {
    /// The next event to send; `None` once `done` was sent (or the store fails for good).
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                self.after = event.seq;
                self.done = event.kind == EventKind::Done;
                return Some(sse(&event));
            }
            if self.done {
                return None;
            }
            match self.store.events(self.id, self.after).await {
                Ok(events) if !events.is_empty() => {
                    self.pending.extend(events);
                    continue;
                }
                // Nothing after `after`: a client resuming past `done` (or a session that ended
                // long ago) must not wait forever. The end commits with its `done` event, so
                // a read after seeing the end has all there is.
                Ok(_) if self.ended => return None,
                Ok(_) => {
                    if let Ok(Some(session)) = self.store.session(self.id).await
                        && session.status.is_terminal()
                    {
                        self.ended = true;
                        continue;
                    }
                }
                Err(e) => {
                    tracing::warn!(session_id = %self.id, error = %e, "cannot read events; retrying")
                }
            }
            match &mut self.feed {
                Some(feed) => {
                    let _ = tokio::time::timeout(REREAD, feed.changed()).await;
                }
                None => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }
}

fn sse(event: &SessionEvent) -> Event {
    let data = serde_json::to_string(event).unwrap_or_else(|_| "{}".into());
    Event::default()
        .id(event.seq.to_string())
        .event(event.kind.as_str())
        .data(data)
}
