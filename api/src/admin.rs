//! The operators' listener (`AGENTQ_ADMIN_LISTEN`): the apalis board over the step queue, its
//! page at `/` and its API under `/api/v1`, behind `AGENTQ_ADMIN_TOKEN`.
//!
//! Every route answers 401 without the credential, the board's task push included: it is
//! `Authorization: Bearer <token>`, or the cookie that signing in on the page sets (the page's
//! own requests cannot carry a header). A browser without it gets the sign-in form as the
//! body of that 401. The cookie holds a value derived from the token, never the token; it is
//! `HttpOnly` and `SameSite=Strict`, so another site cannot make a signed-in browser push.

use std::sync::Arc;

use agentq_shared::config::AdminConfig;
use agentq_shared::queue::{Board, StepJob};
use anyhow::Context as _;
use apalis_board::axum::framework::{ApiBuilder, RegisterRoute};
use apalis_board::axum::sse::TracingBroadcaster;
use apalis_board::axum::ui::ServeUI;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Form, Json, Router};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

const COOKIE: &str = "agentq_admin";
/// How long a sign-in lasts.
const SIGN_IN_SECS: u64 = 12 * 3600;

/// What a request must show.
struct Credential {
    /// SHA-256 of the token: candidates are compared by digest, so the comparison's timing
    /// says nothing about the token.
    token: [u8; 32],
    /// The cookie's value, derived from the token.
    cookie: String,
}

impl Credential {
    fn new(token: &str) -> Self {
        let cookie = hex::encode(Sha256::digest(format!("agentq admin sign-in\0{token}")));
        Self {
            token: Sha256::digest(token).into(),
            cookie,
        }
    }

    fn is_token(&self, candidate: &str) -> bool {
        <[u8; 32]>::from(Sha256::digest(candidate)) == self.token
    }

    fn allows(&self, headers: &HeaderMap) -> bool {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        if let Some(token) = bearer {
            return self.is_token(token);
        }
        let expected = Sha256::digest(&self.cookie);
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .any(|(name, value)| name == COOKIE && Sha256::digest(value) == expected)
    }
}

/// The admin app: the board behind the credential, and the sign-in.
pub fn router(queue: Board, token: &str) -> Router {
    let board = match queue {
        Board::Redis(queue) => {
            let name = queue.name().to_owned();
            ApiBuilder::new(Router::new()).register(&name, queue)
        }
        Board::Sqlite { name, storage } => {
            <ApiBuilder<Router> as RegisterRoute<_, StepJob>>::register(
                ApiBuilder::new(Router::new()),
                &name,
                storage,
            )
        }
    };
    guard(board.build(), token)
}

/// The board's API (`board`) and page behind the credential, with the sign-in.
fn guard(board: Router, token: &str) -> Router {
    let credential = Arc::new(Credential::new(token));
    let board = board
        // The board's log stream (`/api/v1/events`) needs a broadcaster; agentq's logs go to
        // stdout and OTLP, so this one only keeps the stream open (the page shows the board
        // healthy while it is).
        .layer(Extension(TracingBroadcaster::create()))
        // The board's API never answers with its page: an unknown API path is a 404.
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                Json(json!({"error": {"code": "not_found", "message": "no such board route"}})),
            )
        });
    let guarded = Router::new()
        .nest("/api/v1", board)
        .route("/signout", post(sign_out))
        .fallback_service(ServeUI::new())
        .layer(axum::middleware::from_fn_with_state(
            credential.clone(),
            require,
        ));
    Router::new()
        .route("/signin", post(sign_in))
        .with_state(credential)
        .merge(guarded)
}

/// Listens on `AGENTQ_ADMIN_LISTEN` in the background.
pub async fn serve(config: &AdminConfig, queue: Board) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on AGENTQ_ADMIN_LISTEN={}", config.listen))?;
    if config.token.len() < 16 {
        tracing::warn!("AGENTQ_ADMIN_TOKEN is shorter than 16 characters; use a long random one");
    }
    tracing::info!(address = %listener.local_addr()?, "the apalis board is on the admin listener");
    let app = router(queue, &config.token);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the admin listener stopped");
        }
    });
    Ok(())
}

async fn require(
    State(credential): State<Arc<Credential>>,
    request: Request,
    next: Next,
) -> Response {
    if credential.allows(request.headers()) {
        return next.run(request).await;
    }
    let api = request.uri().path().starts_with("/api/");
    let browser = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    let mut response = if browser && !api {
        (StatusCode::UNAUTHORIZED, Html(sign_in_page(None))).into_response()
    } else {
        let message = "send `Authorization: Bearer <AGENTQ_ADMIN_TOKEN>`, or sign in on the page";
        (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": {"code": "unauthorized", "message": message}})),
        )
            .into_response()
    };
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"agentq-admin\""),
    );
    response
}

#[derive(Deserialize)]
struct SignIn {
    token: String,
}

async fn sign_in(
    State(credential): State<Arc<Credential>>,
    form: Result<Form<SignIn>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return (
            StatusCode::UNAUTHORIZED,
            Html(sign_in_page(Some("Enter the admin token."))),
        )
            .into_response();
    };
    if !credential.is_token(form.token.trim()) {
        tracing::warn!("a sign-in to the admin listener with a wrong token");
        return (
            StatusCode::UNAUTHORIZED,
            Html(sign_in_page(Some("That is not the admin token."))),
        )
            .into_response();
    }
    let cookie = format!(
        "{COOKIE}={}; Path=/; Max-Age={SIGN_IN_SECS}; HttpOnly; SameSite=Strict",
        credential.cookie
    );
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/".to_owned()),
            (header::SET_COOKIE, cookie),
        ],
    )
        .into_response()
}

async fn sign_out() -> Response {
    let cookie = format!("{COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict");
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/".to_owned()),
            (header::SET_COOKIE, cookie),
        ],
    )
        .into_response()
}

fn sign_in_page(problem: Option<&str>) -> String {
    let problem = problem
        .map(|p| format!("<p class=\"problem\">{p}</p>"))
        .unwrap_or_default();
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>agentq admin: sign in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font-family: system-ui, sans-serif; background: #111; color: #eee; display: grid;
  place-items: center; min-height: 100vh; margin: 0; }}
form {{ background: #1c1c1c; padding: 2rem; border-radius: 8px; min-width: 20rem; }}
input {{ width: 100%; box-sizing: border-box; padding: .5rem; margin: .5rem 0 1rem; }}
button {{ padding: .5rem 1rem; }}
.problem {{ color: #f77; }}
</style></head>
<body><form method="post" action="/signin">
<h1>agentq queue board</h1>
{problem}<label for="token">Admin token (<code>AGENTQ_ADMIN_TOKEN</code>)</label>
<input id="token" name="token" type="password" autocomplete="current-password" autofocus required>
<button type="submit">Sign in</button>
</form></body></html>"#
    )
}
