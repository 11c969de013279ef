//! The `AGENTQ_WEB_FETCH_ALLOW` and `AGENTQ_WEB_FETCH_DENY` lists: CIDRs, single addresses and
//! host names (`intranet.example`, `*.corp.example`), parsed once at start-up.

use std::net::IpAddr;

use anyhow::anyhow;
use ipnet::IpNet;
use url::Url;

use super::{bare, ip_literal, rules};

/// Host-name entry of an allow or deny list: `intranet.example` or `*.corp.example` (subdomains
/// only; stored as `.corp.example`).
#[derive(Debug, Clone, PartialEq)]
pub(super) enum NamePattern {
    Exact(String),
    Suffix(String),
}

impl NamePattern {
    fn matches(&self, name: &str) -> bool {
        match self {
            Self::Exact(exact) => exact == name,
            Self::Suffix(suffix) => name.ends_with(suffix.as_str()),
        }
    }
}

impl std::fmt::Display for NamePattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Exact(name) => f.write_str(name),
            Self::Suffix(suffix) => write!(f, "*{suffix}"),
        }
    }
}

/// The parsed entries of one list.
#[derive(Debug, Clone, Default)]
pub(super) struct Entries {
    nets: Vec<IpNet>,
    names: Vec<NamePattern>,
}

impl Entries {
    pub(super) fn parse(var: &str, entries: &[String]) -> anyhow::Result<Self> {
        let mut parsed = Self::default();
        for entry in entries {
            match parse_entry(entry.trim()) {
                Some(Entry::Net(net)) => parsed.nets.push(net),
                Some(Entry::Name(name)) => parsed.names.push(name),
                None => {
                    return Err(anyhow!(
                        "{var} entry {entry:?} is not a CIDR (10.0.0.0/8), an address (10.0.0.1) \
                         or a host name (intranet.example, *.corp.example)"
                    ));
                }
            }
        }
        Ok(parsed)
    }

    pub(super) fn net_for(&self, ip: IpAddr) -> Option<&IpNet> {
        let canonical = rules::canonical(ip);
        self.nets
            .iter()
            .find(|net| net.contains(&ip) || net.contains(&canonical))
    }

    pub(super) fn name_for(&self, name: &str) -> Option<&NamePattern> {
        self.names.iter().find(|pattern| pattern.matches(name))
    }
}

enum Entry {
    Net(IpNet),
    Name(NamePattern),
}

fn parse_entry(entry: &str) -> Option<Entry> {
    if entry.contains('/') {
        return entry
            .parse::<IpNet>()
            .ok()
            .map(|net| Entry::Net(net.trunc()));
    }
    let (wildcard, name) = match entry.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, entry),
    };
    if let (false, Some(ip)) = (wildcard, ip_literal(name)) {
        return Some(Entry::Net(IpNet::from(ip)));
    }
    let unexpected = |c: char| c.is_whitespace() || "/\\@?#%*:[]".contains(c);
    if name.is_empty() || name.contains(unexpected) {
        return None;
    }
    // The WHATWG host parser normalises names (case, IDNA) and addresses (`127.1`, `0x7f.1`) the
    // same way it does for URLs, so entries compare with what `Policy::check` sees.
    let url = Url::parse(&format!("http://{name}/")).ok()?;
    let host = url.host_str()?;
    match (ip_literal(host), wildcard) {
        (Some(ip), false) => Some(Entry::Net(IpNet::from(ip))),
        (Some(_), true) => None,
        (None, false) => Some(Entry::Name(NamePattern::Exact(bare(host).to_owned()))),
        (None, true) => Some(Entry::Name(NamePattern::Suffix(format!(".{}", bare(host))))),
    }
}
