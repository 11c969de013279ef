//! SSRF defence: which URLs agentq may reach on someone else's say-so and which addresses it may
//! connect to. `web_fetch` (in the worker) checks every hop with it (the URL the model gave and
//! each redirect target); the API checks a run's `webhook_url` with it before accepting the run
//! ([`Policy::check_before_lookup`]), and the webhook sender checks it again at each attempt.
//! One policy, one pair of lists: `AGENTQ_WEB_FETCH_ALLOW` opens a private target for both.
//!
//! A whole check ([`Policy::check`]):
//!
//! 1. The URL is parsed by the WHATWG parser (`url` crate), which turns `2130706433`,
//!    `0x7f000001`, `0177.0.0.1` and `127.1` into the IP literal `127.0.0.1`. Only `http` and
//!    `https` pass, and URLs carrying credentials are refused.
//! 2. An IP literal is checked as it is. A host name first meets the name rules (`localhost`,
//!    `*.internal`, ..., and the allow/deny lists), then is resolved ONCE; every address must pass.
//! 3. An address is checked against `AGENTQ_WEB_FETCH_DENY` (deny wins), then
//!    `AGENTQ_WEB_FETCH_ALLOW`, then the table of blocked ranges in `ssrf/rules.rs`. The two
//!    lists are parsed in `ssrf/lists.rs`.
//!
//! The caller connects only to the addresses returned in [`Pinned`]: the HTTP client of a hop maps
//! the name to them and cannot look it up again, so DNS rebinding cannot change the target.

mod lists;
pub mod rules;

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use url::Url;

use lists::Entries;

pub const ALLOW_VAR: &str = "AGENTQ_WEB_FETCH_ALLOW";
pub const DENY_VAR: &str = "AGENTQ_WEB_FETCH_DENY";

/// Why a hop is not fetched. The message names the rule; the fetch loop prefixes "refused".
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refused {
    #[error("scheme {0:?} is not allowed: web_fetch fetches http and https URLs only")]
    Scheme(String),
    #[error(
        "the URL carries credentials (user:password@host): they would be sent in clear to that \
         host, and text before @ can disguise the real host; send an Authorization header instead"
    )]
    Credentials,
    #[error("the URL has no host")]
    NoHost,
    #[error("{target} is {rule} ({net}); set {ALLOW_VAR} to open private targets on purpose")]
    Address {
        target: String,
        rule: &'static str,
        net: IpNet,
    },
    #[error("{name} is {rule}; set {ALLOW_VAR} to open it on purpose")]
    Name { name: String, rule: &'static str },
    #[error("{target} matches {DENY_VAR} entry {entry}")]
    Denied { target: String, entry: String },
    #[error("could not resolve {host}: {error}")]
    Unresolved { host: String, error: String },
}

/// Where a checked hop may connect: the host name to pin (none for an IP literal) and the checked
/// addresses.
#[derive(Debug, Clone, PartialEq)]
pub struct Pinned {
    pub name: Option<String>,
    pub addrs: Vec<SocketAddr>,
}

/// What [`Policy::check_before_lookup`] found: an address that passed, or a name that passed its
/// own rules and must now be resolved (`opened`: the allow list names it, so it may resolve to
/// private addresses).
#[derive(Debug, Clone, PartialEq)]
pub enum Judged<'u> {
    Literal(SocketAddr),
    Name {
        host: &'u str,
        port: u16,
        opened: bool,
    },
}

/// Looks host names up. The system resolver in production; tests swap in a fixed table.
#[async_trait::async_trait]
pub trait Resolver: Send + Sync {
    async fn lookup(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>>;
}

/// `getaddrinfo` through tokio.
pub struct SystemResolver;

#[async_trait::async_trait]
impl Resolver for SystemResolver {
    async fn lookup(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        Ok(tokio::net::lookup_host((host, port)).await?.collect())
    }
}

/// The IP address of an IP-literal host as the URL parser prints it (`127.0.0.1`, `[::1]`).
fn ip_literal(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// A host name without its trailing dot: `localhost.` and `localhost` are the same host.
fn bare(host: &str) -> &str {
    host.strip_suffix('.').unwrap_or(host)
}

/// The allow and deny lists, parsed once.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    allow: Entries,
    deny: Entries,
}

impl Policy {
    /// Parses `AGENTQ_WEB_FETCH_ALLOW`/`_DENY` entries; an error names the variable and the entry.
    pub fn new(allow: &[String], deny: &[String]) -> anyhow::Result<Self> {
        Ok(Self {
            allow: Entries::parse(ALLOW_VAR, allow)?,
            deny: Entries::parse(DENY_VAR, deny)?,
        })
    }

    /// Checks one hop and returns the only addresses it may connect to.
    pub async fn check(&self, url: &Url, resolver: &dyn Resolver) -> Result<Pinned, Refused> {
        let (host, port, opened) = match self.check_before_lookup(url)? {
            Judged::Literal(addr) => {
                return Ok(Pinned {
                    name: None,
                    addrs: vec![addr],
                });
            }
            Judged::Name { host, port, opened } => (host, port, opened),
        };
        let unresolved = |error: String| Refused::Unresolved {
            host: host.to_owned(),
            error,
        };
        let mut addrs = resolver
            .lookup(host, port)
            .await
            .map_err(|e| unresolved(e.to_string()))?;
        addrs.dedup();
        if addrs.is_empty() {
            return Err(unresolved("no addresses".to_owned()));
        }
        for addr in &addrs {
            self.check_address(addr.ip(), Some(host), opened)?;
        }
        Ok(Pinned {
            name: Some(host.to_owned()),
            addrs,
        })
    }

    /// Everything [`Policy::check`] can judge without a DNS lookup: the scheme, credentials, an
    /// IP literal, a host name's own rules and the lists. The API checks a webhook URL this way
    /// (a run is not refused because DNS is slow, and no name is looked up on a client's
    /// behalf); the sender makes the whole check before each attempt.
    pub fn check_before_lookup<'u>(&self, url: &'u Url) -> Result<Judged<'u>, Refused> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Refused::Scheme(url.scheme().to_owned()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Refused::Credentials);
        }
        let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
            return Err(Refused::NoHost);
        };
        if let Some(ip) = ip_literal(host) {
            self.check_address(ip, None, false)?;
            return Ok(Judged::Literal(SocketAddr::new(ip, port)));
        }
        let opened = self.check_name(bare(host))?;
        Ok(Judged::Name { host, port, opened })
    }

    /// Refuses a denied or blocked name; `Ok(true)` when the allow list opens it, so that it may
    /// resolve to private addresses.
    fn check_name(&self, name: &str) -> Result<bool, Refused> {
        if let Some(entry) = self.deny.name_for(name) {
            return Err(Refused::Denied {
                target: name.to_owned(),
                entry: entry.to_string(),
            });
        }
        if self.allow.name_for(name).is_some() {
            return Ok(true);
        }
        match rules::blocking_name_rule(name) {
            Some(rule) => Err(Refused::Name {
                name: name.to_owned(),
                rule,
            }),
            None => Ok(false),
        }
    }

    /// Deny list, then allow list (or a name it opened), then the blocked ranges.
    fn check_address(
        &self,
        ip: IpAddr,
        host: Option<&str>,
        name_opened: bool,
    ) -> Result<(), Refused> {
        let canonical = rules::canonical(ip);
        let address = if canonical == ip {
            ip.to_string()
        } else {
            format!("{ip} (IPv4-mapped {canonical})")
        };
        let target = match host {
            Some(host) => format!("{host} resolves to {address}, which"),
            None => address,
        };
        if let Some(entry) = self.deny.net_for(ip) {
            return Err(Refused::Denied {
                target,
                entry: entry.to_string(),
            });
        }
        if name_opened || self.allow.net_for(ip).is_some() {
            return Ok(());
        }
        match rules::blocking_rule(ip) {
            Some(rule) => Err(Refused::Address {
                target,
                rule: rule.name,
                net: rule.net,
            }),
            None => Ok(()),
        }
    }
}
