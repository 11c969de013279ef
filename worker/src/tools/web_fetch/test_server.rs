//! A local HTTP server for the web_fetch tests, on 127.0.0.2 (Linux routes all of 127/8 to `lo`),
//! so that tests can open it with `AGENTQ_WEB_FETCH_ALLOW=127.0.0.2/32` while 127.0.0.1 stays shut.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};

/// What `/echo` saw.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Seen {
    pub method: String,
    pub path: String,
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

type Log = Arc<Mutex<Vec<Seen>>>;

pub(crate) struct TestServer {
    pub addr: SocketAddr,
    seen: Log,
}

impl TestServer {
    pub(crate) async fn start() -> Self {
        let seen = Log::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = app(seen.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, seen }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// The path of a `/to` redirect: `status` with `Location: location`.
pub(crate) fn redirect_path(status: u16, location: &str) -> String {
    format!("/to?status={status}&location={}", percent_encode(location))
}

/// The `/typed` path serving `bytes` with `content_type` (no Content-Type header when `None`).
pub(crate) fn typed_path(content_type: Option<&str>, bytes: &[u8]) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "/typed?type={}&hex={hex}",
        percent_encode(content_type.unwrap_or_default())
    )
}

fn percent_encode(text: &str) -> String {
    text.bytes().map(|b| format!("%{b:02X}")).collect()
}

fn app(seen: Log) -> Router {
    Router::new()
        .route("/echo", any(echo))
        .route(
            "/text/{len}",
            get(|Path(len): Path<usize>| async move { "x".repeat(len) }),
        )
        .route("/gzip", get(gzip))
        .route(
            "/slow",
            get(|| async { tokio::time::sleep(Duration::from_secs(5)).await }),
        )
        .route("/redirect/{n}", get(redirect_chain))
        .route("/to", any(to))
        .route("/typed", get(typed))
        .with_state(seen)
}

async fn echo(
    State(seen): State<Log>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> &'static str {
    let headers = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_owned()))
        .collect();
    let path = uri.path().to_owned();
    seen.lock().unwrap().push(Seen {
        method: method.to_string(),
        path,
        headers,
        body,
    });
    "ok"
}

/// 1 MB of `a`, gzip-compressed to about 1 KB.
async fn gzip() -> Response {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(&vec![b'a'; 1_000_000]).unwrap();
    let body = encoder.finish().unwrap();
    let headers = [
        (header::CONTENT_TYPE, "text/plain"),
        (header::CONTENT_ENCODING, "gzip"),
    ];
    (headers, body).into_response()
}

async fn redirect_chain(Path(n): Path<u32>) -> Response {
    match n {
        0 => "done".into_response(),
        n => redirect(StatusCode::FOUND, &format!("/redirect/{}", n - 1)),
    }
}

async fn to(Query(query): Query<HashMap<String, String>>) -> Response {
    let status = StatusCode::from_u16(query["status"].parse().unwrap()).unwrap();
    redirect(status, &query["location"])
}

fn redirect(status: StatusCode, location: &str) -> Response {
    (status, [(header::LOCATION, location.to_owned())]).into_response()
}

async fn typed(Query(query): Query<HashMap<String, String>>) -> Response {
    let hex = &query["hex"];
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    match query.get("type").filter(|t| !t.is_empty()) {
        Some(content_type) => {
            ([(header::CONTENT_TYPE, content_type.clone())], bytes).into_response()
        }
        None => {
            let mut response = bytes.into_response();
            response.headers_mut().remove(header::CONTENT_TYPE);
            response
        }
    }
}
