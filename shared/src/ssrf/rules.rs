//! The targets `web_fetch` refuses unless `AGENTQ_WEB_FETCH_ALLOW` opens them: address ranges and
//! host names, one named row each, so that a refusal can say which rule it hit.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// The row of a table that blocks an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub name: &'static str,
    pub net: IpNet,
}

const fn v4(a: u8, b: u8, c: u8, d: u8, prefix_len: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), prefix_len)
}

const fn v6(segments: [u16; 8], prefix_len: u8) -> Ipv6Net {
    let [a, b, c, d, e, f, g, h] = segments;
    Ipv6Net::new_assert(Ipv6Addr::new(a, b, c, d, e, f, g, h), prefix_len)
}

/// IPv4 ranges that are not the public Internet (IANA special-purpose registry).
const V4: &[(Ipv4Net, &str)] = &[
    (v4(0, 0, 0, 0, 8), "unspecified (\"this network\")"),
    (v4(10, 0, 0, 0, 8), "private"),
    (
        v4(100, 64, 0, 0, 10),
        "shared address space (carrier-grade NAT)",
    ),
    (v4(127, 0, 0, 0, 8), "loopback"),
    (v4(169, 254, 0, 0, 16), "link-local (cloud metadata)"),
    (v4(172, 16, 0, 0, 12), "private"),
    (v4(192, 0, 0, 0, 24), "IETF protocol assignments"),
    (v4(192, 0, 2, 0, 24), "documentation (TEST-NET-1)"),
    (v4(192, 88, 99, 0, 24), "6to4 relay anycast"),
    (v4(192, 168, 0, 0, 16), "private"),
    (v4(198, 18, 0, 0, 15), "benchmarking"),
    (v4(198, 51, 100, 0, 24), "documentation (TEST-NET-2)"),
    (v4(203, 0, 113, 0, 24), "documentation (TEST-NET-3)"),
    (v4(224, 0, 0, 0, 4), "multicast"),
    (v4(240, 0, 0, 0, 4), "reserved"),
    (v4(255, 255, 255, 255, 32), "broadcast"),
];

/// IPv6 ranges that are not the public Internet. IPv4-mapped addresses (`::ffff:0:0/96`) are not
/// here: they are checked as the IPv4 address they carry. Addresses that embed an IPv4 address in
/// other ways (IPv4-compatible, NAT64, 6to4, Teredo) are simply blocked.
const V6: &[(Ipv6Net, &str)] = &[
    (v6([0, 0, 0, 0, 0, 0, 0, 0], 128), "unspecified"),
    (v6([0, 0, 0, 0, 0, 0, 0, 1], 128), "loopback"),
    (
        v6([0, 0, 0, 0, 0, 0, 0, 0], 96),
        "IPv4-compatible (deprecated)",
    ),
    (v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96), "NAT64"),
    (v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48), "local-use NAT64"),
    (v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64), "discard-only"),
    (
        v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23),
        "IETF protocol assignments",
    ),
    (v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32), "Teredo"),
    (v6([0x2001, 2, 0, 0, 0, 0, 0, 0], 48), "benchmarking"),
    (
        v6([0x2001, 0x10, 0, 0, 0, 0, 0, 0], 28),
        "ORCHID (deprecated)",
    ),
    (v6([0x2001, 0x20, 0, 0, 0, 0, 0, 0], 28), "ORCHIDv2"),
    (v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32), "documentation"),
    (v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16), "6to4"),
    (v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20), "documentation"),
    (
        v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),
        "unique-local (private)",
    ),
    (v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), "link-local"),
    (
        v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10),
        "site-local (deprecated)",
    ),
    (v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), "multicast"),
];

/// Public IPv6 unicast lives in `2000::/3`; anything outside it that no row names is refused too.
const V6_GLOBAL_UNICAST: Ipv6Net = v6([0x2000, 0, 0, 0, 0, 0, 0, 0], 3);

/// Host names refused before any lookup: exact names, then `*.suffix` names (stored with their
/// leading dot).
const NAMES: &[(&str, &str)] = &[
    ("localhost", "a loopback name (localhost, RFC 6761)"),
    (
        "ip6-localhost",
        "a loopback name (ip6-localhost, /etc/hosts)",
    ),
    ("ip6-loopback", "a loopback name (ip6-loopback, /etc/hosts)"),
];
const SUFFIXES: &[(&str, &str)] = &[
    (".localhost", "a loopback name (*.localhost, RFC 6761)"),
    (".local", "a link-local mDNS name (*.local, RFC 6762)"),
    (".internal", "a private-use name (*.internal)"),
    (".home.arpa", "a home-network name (*.home.arpa, RFC 8375)"),
];

/// The IPv4 address an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) carries, else `ip` itself.
/// `Ipv6Addr::is_loopback` is false for `::ffff:127.0.0.1`, so every check runs on this form.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// The most specific rule that blocks `ip` (checked in its [`canonical`] form), if any.
pub fn blocking_rule(ip: IpAddr) -> Option<Rule> {
    let ip = canonical(ip);
    let rows: Vec<(IpNet, &'static str)> = match ip {
        IpAddr::V4(_) => V4.iter().map(|&(net, name)| (net.into(), name)).collect(),
        IpAddr::V6(_) => V6.iter().map(|&(net, name)| (net.into(), name)).collect(),
    };
    let most_specific = rows
        .into_iter()
        .filter(|(net, _)| net.contains(&ip))
        .max_by_key(|(net, _)| net.prefix_len())
        .map(|(net, name)| Rule { name, net });
    let outside_global_unicast = match ip {
        IpAddr::V6(v6) => !V6_GLOBAL_UNICAST.contains(&v6),
        IpAddr::V4(_) => false,
    };
    most_specific.or_else(|| {
        outside_global_unicast.then_some(Rule {
            name: "outside global unicast",
            net: IpNet::V6(V6_GLOBAL_UNICAST),
        })
    })
}

/// The rule that refuses a host name before any lookup, if any. `name` is lower case (the URL
/// parser makes it so), without a trailing dot.
pub fn blocking_name_rule(name: &str) -> Option<&'static str> {
    NAMES
        .iter()
        .find(|(blocked, _)| *blocked == name)
        .or_else(|| SUFFIXES.iter().find(|(suffix, _)| name.ends_with(suffix)))
        .map(|(_, rule)| *rule)
}
