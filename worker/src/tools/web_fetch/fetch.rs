//! The fetch itself: one HTTP client per hop, pinned to the addresses `ssrf.rs` checked, redirects
//! followed by hand (each target checked again), and a body read chunk by chunk up to the cap.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{self, HeaderMap};
use reqwest::{Method, Response, StatusCode, Url};

use super::content::{self, Kind, MediaType};
use super::ssrf::{Pinned, Policy, Refused, Resolver};

pub(crate) const USER_AGENT: &str = "agentq-web-fetch/0.1";

/// Limits from `WebFetchSettings`.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub timeout: Duration,
    pub max_body_bytes: usize,
    pub max_redirects: usize,
}

pub(crate) struct Fetcher {
    pub policy: Policy,
    pub resolver: Arc<dyn Resolver>,
    pub limits: Limits,
}

/// A request as the model asked for it, headers already vetted.
#[derive(Debug, Clone)]
pub(crate) struct FetchRequest {
    pub url: Url,
    pub method: Method,
    pub headers: HeaderMap,
    pub body: Option<String>,
}

/// The final response, its body already turned into text for the model.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Fetched {
    pub status: u16,
    pub url: Url,
    pub content_type: Option<String>,
    /// Redirects followed to get here.
    pub redirects: usize,
    pub text: String,
    pub binary: bool,
    pub truncated: bool,
    pub bytes: usize,
}

/// Why a fetch failed. The `Display` text holds only what web_fetch itself knows (the URL the
/// model asked for, its own limits); what came from the server (redirect targets, a Location it
/// sent, transport errors naming its data) is in [`FetchError::server_detail`], which reaches the
/// model only inside the untrusted-content block.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    #[error("refused: {0}")]
    Refused(Refused),
    #[error("refused redirect: the server redirected to a target web_fetch may not reach")]
    RefusedRedirect { url: String, reason: Refused },
    #[error("too many redirects: more than {max} (AGENTQ_WEB_FETCH_MAX_REDIRECTS)")]
    TooManyRedirects { max: usize, url: String },
    #[error("the server redirected to an invalid location")]
    BadRedirect { from: String, location: String },
    #[error("timed out after {0:?} (AGENTQ_WEB_FETCH_TIMEOUT_SECS)")]
    Timeout(Duration),
    #[error("could not fetch the page")]
    Transport { url: String, message: String },
}

impl FetchError {
    /// What the server contributed to this failure, one `Name: value` line each.
    pub(crate) fn server_detail(&self) -> Option<String> {
        match self {
            Self::Refused(_) | Self::Timeout(_) => None,
            Self::RefusedRedirect { url, reason } => {
                Some(format!("Location: {url}\nRefused because: {reason}"))
            }
            Self::TooManyRedirects { url, .. } => Some(format!("Last Location: {url}")),
            Self::BadRedirect { from, location } => {
                Some(format!("Redirected from: {from}\nLocation: {location}"))
            }
            Self::Transport { url, message } => Some(format!("URL: {url}\nError: {message}")),
        }
    }
}

impl Fetcher {
    /// Fetches within the timeout, which covers lookups, every hop and reading the body.
    pub(crate) async fn fetch(&self, request: FetchRequest) -> Result<Fetched, FetchError> {
        tokio::time::timeout(self.limits.timeout, self.follow(request))
            .await
            .map_err(|_| FetchError::Timeout(self.limits.timeout))?
    }

    async fn follow(&self, request: FetchRequest) -> Result<Fetched, FetchError> {
        let FetchRequest {
            mut url,
            mut method,
            mut headers,
            mut body,
        } = request;
        let mut redirects = 0;
        loop {
            let pinned = self
                .policy
                .check(&url, self.resolver.as_ref())
                .await
                .map_err(|reason| match redirects {
                    0 => FetchError::Refused(reason),
                    _ => FetchError::RefusedRedirect {
                        url: url.to_string(),
                        reason,
                    },
                })?;
            let transport = |error: reqwest::Error| FetchError::Transport {
                url: url.to_string(),
                message: error_chain(&error),
            };
            let client = pinned_client(&pinned, USER_AGENT).map_err(transport)?;
            let mut builder = client
                .request(method.clone(), url.clone())
                .headers(headers.clone());
            if let Some(body) = &body {
                builder = builder.body(body.clone());
            }
            let response = builder.send().await.map_err(transport)?;
            let Some(next) = redirect_target(&response, &url)? else {
                let mut fetched = read(response, self.limits.max_body_bytes).await?;
                fetched.redirects = redirects;
                return Ok(fetched);
            };
            if redirects == self.limits.max_redirects {
                return Err(FetchError::TooManyRedirects {
                    max: redirects,
                    url: next.to_string(),
                });
            }
            redirects += 1;
            let status = response.status();
            let becomes_get = status == StatusCode::SEE_OTHER
                || (method == Method::POST
                    && matches!(status, StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND));
            if becomes_get {
                method = Method::GET;
                body = None;
                headers.remove(header::CONTENT_TYPE);
            }
            if next.origin() != url.origin() {
                // Any header the caller set may be a credential (Authorization, Cookie, X-Api-Key,
                // a signed token): none goes to another origin, except the type of a body that
                // a 307/308 carries along.
                let content_type = body
                    .as_ref()
                    .and_then(|_| headers.get(header::CONTENT_TYPE).cloned());
                headers.clear();
                if let Some(content_type) = content_type {
                    headers.insert(header::CONTENT_TYPE, content_type);
                }
            }
            url = next;
        }
    }
}

/// A client that can only reach the checked addresses: the host name maps to them, any other
/// lookup fails, system proxies are ignored and redirects are left to the caller. (The webhook
/// sender connects the same way.)
pub(crate) fn pinned_client(pinned: &Pinned, user_agent: &str) -> reqwest::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(user_agent)
        .dns_resolver(NoLookups);
    if let Some(name) = &pinned.name {
        builder = builder.resolve_to_addrs(name, &pinned.addrs);
    }
    builder.build()
}

/// The resolver behind the pins: a name without a pin is a bug, so it fails rather than looks up.
struct NoLookups;

impl reqwest::dns::Resolve for NoLookups {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let message = format!("{} was not checked before connecting", name.as_str());
        Box::pin(async move { Err(message.into()) })
    }
}

/// Where a redirect points, or `None` for a final response.
fn redirect_target(response: &Response, from: &Url) -> Result<Option<Url>, FetchError> {
    let redirect = matches!(
        response.status(),
        StatusCode::MOVED_PERMANENTLY
            | StatusCode::FOUND
            | StatusCode::SEE_OTHER
            | StatusCode::TEMPORARY_REDIRECT
            | StatusCode::PERMANENT_REDIRECT
    );
    let Some(location) = response
        .headers()
        .get(header::LOCATION)
        .filter(|_| redirect)
    else {
        return Ok(None);
    };
    let bad = || FetchError::BadRedirect {
        from: from.to_string(),
        location: String::from_utf8_lossy(location.as_bytes()).into_owned(),
    };
    let location = location.to_str().map_err(|_| bad())?;
    from.join(location).map(Some).map_err(|_| bad())
}

/// Reads the body chunk by chunk (decompressed by reqwest), stopping at `limit` bytes; a binary
/// body is not read at all, a body of unknown type only until its first chunk shows it is binary.
async fn read(mut response: Response, limit: usize) -> Result<Fetched, FetchError> {
    let url = response.url().clone();
    let transport = |error: reqwest::Error| FetchError::Transport {
        url: url.to_string(),
        message: error_chain(&error),
    };
    let content_type = response.headers().get(header::CONTENT_TYPE).map(|value| {
        String::from_utf8_lossy(value.as_bytes())
            .chars()
            .take(200)
            .collect::<String>()
    });
    let media = content_type.as_deref().and_then(MediaType::parse);
    let mut kind = media.as_ref().map(MediaType::kind);
    let declared_length = response.content_length();
    let mut fetched = Fetched {
        status: response.status().as_u16(),
        url: url.clone(),
        content_type,
        redirects: 0,
        text: String::new(),
        binary: false,
        truncated: false,
        bytes: 0,
    };
    let mut buffer: Vec<u8> = Vec::new();
    while kind != Some(Kind::Binary) {
        let Some(chunk) = response.chunk().await.map_err(transport)? else {
            break;
        };
        if chunk.is_empty() {
            continue;
        }
        if *kind.get_or_insert_with(|| content::sniff(&chunk)) == Kind::Binary {
            break;
        }
        let room = limit - buffer.len();
        if chunk.len() > room {
            buffer.extend_from_slice(&chunk[..room]);
            fetched.truncated = true;
            break;
        }
        buffer.extend_from_slice(&chunk);
    }
    if kind == Some(Kind::Binary) {
        fetched.binary = true;
        fetched.text = content::binary_notice(media.as_ref(), declared_length);
        return Ok(fetched);
    }
    let charset = media.as_ref().and_then(|media| media.charset.as_deref());
    fetched.bytes = buffer.len();
    fetched.text = content::render(kind.unwrap_or(Kind::Text), charset, &buffer, &url);
    Ok(fetched)
}

/// An error with its causes: reqwest's own message alone rarely says what went wrong.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
