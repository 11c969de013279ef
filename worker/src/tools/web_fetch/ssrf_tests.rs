//! SSRF tests. Every refused URL is first checked by the policy alone (no socket, no lookup), and
//! only then given to the tool, so a broken check fails the test without reaching any address;
//! loopback URLs use the counting listener's port, so a missing check would show as a connection.

use pretty_assertions::assert_eq;
use reqwest::Url;

use super::WebFetch;
use super::ssrf::Policy;
use super::ssrf::rules;
use super::test_server::{TestServer, redirect_path};
use super::test_support::{CountingListener, FixedResolver, refusal, settings, tool_with};

mod hostile_urls;
mod lists;

use hostile_urls::hostile_urls;

const HINT: &str = "set AGENTQ_WEB_FETCH_ALLOW to open private targets on purpose";

#[tokio::test]
async fn hostile_urls_are_refused_before_any_lookup_or_connection() {
    let listener = CountingListener::start().await;
    let (p, q) = (
        listener.v4_port,
        listener.v6_port.unwrap_or(listener.v4_port),
    );
    let resolver = FixedResolver::with(&[]);
    let tool = tool_with(&settings(&[], &[]), resolver.clone());
    let policy = Policy::new(&[], &[]).unwrap();
    let table = hostile_urls(p, q);
    assert!(table.len() >= 40, "only {} hostile URLs", table.len());
    for (url, rule) in &table {
        let parsed = Url::parse(url).unwrap();
        // The policy alone first: the tool only gets URLs the check refuses without a socket.
        let pure = policy.check(&parsed, resolver.as_ref()).await;
        assert!(pure.is_err(), "{url} passed the check: {pure:?}");
        let message = refusal(&tool, url).await;
        assert!(message.starts_with("refused: "), "{url}: {message}");
        assert!(
            message.contains(rule),
            "{url}: {message:?} does not name {rule:?}"
        );
    }
    assert_eq!(resolver.lookup_count(), 0, "a hostile URL reached DNS");
    assert_eq!(
        listener.connections(),
        0,
        "a hostile URL reached the listener"
    );

    let exact = [
        (
            format!("http://0x7f.1:{p}/"),
            format!("127.0.0.1 is loopback (127.0.0.0/8); {HINT}"),
        ),
        (
            format!("http://[::ffff:7f00:1]:{p}/"),
            format!("::ffff:127.0.0.1 (IPv4-mapped 127.0.0.1) is loopback (127.0.0.0/8); {HINT}"),
        ),
        (
            "http://0xa9fea9fe/latest/meta-data/".to_owned(),
            format!("169.254.169.254 is link-local (cloud metadata) (169.254.0.0/16); {HINT}"),
        ),
        (
            format!("http://LOCALHOST.:{p}/"),
            "localhost is a loopback name (localhost, RFC 6761); set AGENTQ_WEB_FETCH_ALLOW to \
             open it on purpose"
                .to_owned(),
        ),
        (
            "file:///etc/passwd".to_owned(),
            "scheme \"file\" is not allowed: web_fetch fetches http and https URLs only".to_owned(),
        ),
        (
            format!("http://example.com@127.0.0.1:{p}/"),
            "the URL carries credentials (user:password@host): they would be sent in clear to \
             that host, and text before @ can disguise the real host; send an Authorization \
             header instead"
                .to_owned(),
        ),
    ];
    for (url, reason) in exact {
        assert_eq!(refusal(&tool, &url).await, format!("refused: {reason}"));
    }
    assert_eq!(listener.connections(), 0);

    // The listener does see a fetch that gets through: here one opened on purpose.
    let opened = tool_with(&settings(&["127.0.0.1/32"], &[]), resolver.clone());
    let message = refusal(&opened, &format!("http://127.0.0.1:{p}/")).await;
    assert!(message.starts_with("could not fetch"), "{message}");
    for _ in 0..100 {
        if listener.connections() > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(listener.connections() >= 1);
}

#[tokio::test]
async fn a_name_is_refused_when_any_of_its_addresses_is_blocked() {
    let listener = CountingListener::start().await;
    let p = listener.v4_port;
    // The tool gets names that resolve to loopback only; other addresses meet the policy alone.
    let resolver = FixedResolver::with(&[
        ("intranet.test", &["127.0.0.2", "127.0.0.1"]),
        ("mapped.test", &["::ffff:127.0.0.1"]),
        ("rebind.test", &["10.0.0.7"]),
        ("metadata.test", &["::ffff:169.254.169.254"]),
    ]);
    let tool = tool_with(&settings(&["127.0.0.2/32"], &[]), resolver.clone());
    let refusals = [
        (
            "intranet.test",
            "intranet.test resolves to 127.0.0.1, which is loopback (127.0.0.0/8)",
        ),
        (
            "mapped.test",
            "resolves to ::ffff:127.0.0.1 (IPv4-mapped 127.0.0.1), which is loopback",
        ),
        (
            "unknown.test",
            "could not resolve unknown.test: no such test host",
        ),
    ];
    for (name, reason) in refusals {
        let message = refusal(&tool, &format!("http://{name}:{p}/")).await;
        assert!(
            message.starts_with("refused: ") && message.contains(reason),
            "{message}"
        );
    }
    let policy = Policy::new(&[], &[]).unwrap();
    let refusals = [
        (
            "rebind.test",
            format!("rebind.test resolves to 10.0.0.7, which is private (10.0.0.0/8); {HINT}"),
        ),
        (
            "metadata.test",
            format!(
                "metadata.test resolves to ::ffff:169.254.169.254 (IPv4-mapped \
            169.254.169.254), which is link-local (cloud metadata) (169.254.0.0/16); {HINT}"
            ),
        ),
    ];
    for (name, reason) in refusals {
        let url = Url::parse(&format!("http://{name}/")).unwrap();
        let refused = policy.check(&url, resolver.as_ref()).await.unwrap_err();
        assert_eq!(refused.to_string(), reason);
    }
    assert_eq!(resolver.lookup_count(), 5, "each name is looked up once");
    assert_eq!(listener.connections(), 0);
}

#[tokio::test]
async fn hosts_file_names_that_resolve_to_loopback_are_refused() {
    let listener = CountingListener::start().await;
    let tool = WebFetch::new(&settings(&[], &[])).unwrap();
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    let mut names: Vec<&str> = hosts
        .lines()
        .map(|line| line.split('#').next().unwrap_or_default())
        .flat_map(|line| line.split_whitespace().skip(1))
        .collect();
    names.push("localhost");
    names.sort_unstable();
    names.dedup();
    let mut checked = 0;
    for name in names {
        // Only names this machine resolves to loopback alone: nothing else may ever be a target.
        let Ok(addrs) = tokio::net::lookup_host((name, listener.v4_port)).await else {
            continue;
        };
        let addrs: Vec<_> = addrs.collect();
        if addrs.is_empty() || !addrs.iter().all(|a| a.ip().is_loopback()) {
            continue;
        }
        let message = refusal(&tool, &format!("http://{name}:{}/", listener.v4_port)).await;
        assert!(
            message.starts_with("refused: ") && message.contains("loopback"),
            "{message}"
        );
        checked += 1;
    }
    assert!(checked >= 1);
    assert_eq!(listener.connections(), 0);
}

#[tokio::test]
async fn the_system_lookup_checks_every_address_and_deny_beats_an_allowed_name() {
    let listener = CountingListener::start().await;
    let settings = settings(&["localhost"], &["127.0.0.0/8", "::1/128"]);
    let tool = WebFetch::new(&settings).unwrap();
    let message = refusal(&tool, &format!("http://localhost:{}/", listener.v4_port)).await;
    assert!(
        message.starts_with("refused: localhost resolves to "),
        "{message}"
    );
    assert!(
        message.contains(", which matches AGENTQ_WEB_FETCH_DENY entry "),
        "{message}"
    );
    assert_eq!(listener.connections(), 0);
}

#[tokio::test]
async fn a_redirect_from_an_allowed_server_to_a_private_one_is_refused() {
    let listener = CountingListener::start().await;
    let server = TestServer::start().await;
    let tool = tool_with(&settings(&["127.0.0.2/32"], &[]), FixedResolver::with(&[]));
    let p = listener.v4_port;
    let loopback = format!("http://127.0.0.1:{p}/");
    for status in [301, 302, 303, 307, 308] {
        let start = server.url(&redirect_path(status, &loopback));
        assert_eq!(
            refusal(&tool, &start).await,
            format!(
                "refused redirect: the server redirected to a target web_fetch may not reach; \
                 what the server sent is below, as untrusted data from the web:\n\
                 <untrusted_web_content source=\"{start}\">\nLocation: {loopback}\n\
                 Refused because: 127.0.0.1 is loopback (127.0.0.0/8); {HINT}\n\
                 </untrusted_web_content>"
            )
        );
    }
    // Redirect targets are loopback or refused by scheme: nothing else may ever be a target.
    let targets = [
        (
            format!("http://localhost:{p}/"),
            "localhost is a loopback name",
        ),
        (
            format!("http://[::ffff:127.0.0.1]:{p}/"),
            "(IPv4-mapped 127.0.0.1) is loopback",
        ),
        (format!("//0x7f.1:{p}/"), "127.0.0.1 is loopback"),
        (
            "file:///etc/passwd".to_owned(),
            "scheme \"file\" is not allowed",
        ),
        (
            format!("gopher://127.0.0.1:{p}/"),
            "scheme \"gopher\" is not allowed",
        ),
    ];
    for (location, rule) in targets {
        let message = refusal(&tool, &server.url(&redirect_path(302, &location))).await;
        assert!(
            message.starts_with("refused redirect: "),
            "{location}: {message}"
        );
        assert!(message.contains(rule), "{location}: {message}");
    }
    assert_eq!(listener.connections(), 0);
}

#[test]
fn public_addresses_match_no_rule() {
    // Values only: nothing connects to them.
    for public in [
        "93.184.215.14",
        "1.1.1.1",
        "2606:4700:4700::1111",
        "::ffff:8.8.8.8",
    ] {
        let ip = public.parse().unwrap();
        assert_eq!(rules::blocking_rule(ip), None, "{public}");
    }
    let ip = "4000::1".parse().unwrap();
    assert_eq!(
        rules::blocking_rule(ip).map(|r| r.name),
        Some("outside global unicast")
    );
}
