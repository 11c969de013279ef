//! The session viewer at `/ui`: one hand-written page, its script and its stylesheet, embedded in
//! the binary (no build step, nothing fetched at run time). The page signs in with an API key
//! and uses the public API like any client. Everything it shows from the model, the tools or the
//! web is written as text, never as HTML, and the Content-Security-Policy below allows nothing
//! but these three files and calls back to this origin.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};

const PAGE: &str = include_str!("../../ui/index.html");
const SCRIPT: &str = include_str!("../../ui/app.js");
const STYLE: &str = include_str!("../../ui/app.css");

/// Only this origin's script, styles and API; no inline code, no frames, no plugins, no forms
/// posted elsewhere.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, content_type),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        // The files change with the binary: revalidate rather than keep a stale page.
        (header::CACHE_CONTROL, "no-cache"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

pub async fn page() -> Response {
    asset(PAGE, "text/html; charset=utf-8")
}

pub async fn script() -> Response {
    asset(SCRIPT, "text/javascript; charset=utf-8")
}

pub async fn style() -> Response {
    asset(STYLE, "text/css; charset=utf-8")
}

/// `/ui/` and `/ui` are the same page; the address without the slash is the one the page's
/// links use.
pub async fn slash() -> Redirect {
    Redirect::permanent("/ui")
}
