//! The allow and deny lists: deny wins, an allowed name may resolve to private addresses (and is
//! pinned to them), and a bad entry names its variable.

use pretty_assertions::assert_eq;

use super::super::ssrf::Policy;
use super::super::test_server::TestServer;
use super::super::test_support::{FixedResolver, call, refusal, settings, tool_with};

#[tokio::test]
async fn deny_beats_allow_for_addresses_and_names() {
    let server = TestServer::start().await;
    let resolver = FixedResolver::with(&[("secret.corp.test", &["127.0.0.2"])]);
    let settings = settings(
        &["127.0.0.0/8", "*.corp.test"],
        &["127.0.0.2", "secret.corp.test"],
    );
    let tool = tool_with(&settings, resolver.clone());
    assert_eq!(
        refusal(&tool, &server.url("/echo")).await,
        "refused: 127.0.0.2 matches AGENTQ_WEB_FETCH_DENY entry 127.0.0.2/32"
    );
    let url = format!("http://secret.corp.test:{}/echo", server.addr.port());
    assert_eq!(
        refusal(&tool, &url).await,
        "refused: secret.corp.test matches AGENTQ_WEB_FETCH_DENY entry secret.corp.test"
    );
    assert_eq!(
        resolver.lookup_count(),
        0,
        "a denied name is not even looked up"
    );
    assert_eq!(server.seen(), vec![]);
}

#[tokio::test]
async fn an_allowed_name_may_resolve_to_a_private_address_and_is_pinned_to_it() {
    let server = TestServer::start().await;
    // `intranet.test` exists in no DNS: the fetch can only work through the pinned address.
    let resolver = FixedResolver::with(&[("intranet.test", &["127.0.0.2"])]);
    let tool = tool_with(&settings(&["*.test"], &[]), resolver.clone());
    let url = format!("http://intranet.test:{}/echo", server.addr.port());
    let result = call(&tool, serde_json::json!({ "url": url }))
        .await
        .unwrap();
    assert_eq!(result["status"], 200);
    assert_eq!(
        server.seen()[0].headers["host"],
        format!("intranet.test:{}", server.addr.port())
    );
    assert_eq!(resolver.lookup_count(), 1);
}

#[test]
fn invalid_entries_name_their_variable() {
    let parse = |allow: &[&str], deny: &[&str]| {
        let to_vec = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Policy::new(&to_vec(allow), &to_vec(deny))
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    assert_eq!(
        parse(&["10.0.0.0/8", "10.0.0.0/33"], &[]),
        Err(
            "AGENTQ_WEB_FETCH_ALLOW entry \"10.0.0.0/33\" is not a CIDR (10.0.0.0/8), an address \
             (10.0.0.1) or a host name (intranet.example, *.corp.example)"
                .into()
        )
    );
    for bad in [
        "http://intranet.example",
        "user@host",
        "*.10.0.0.1",
        "*",
        "a b",
        "host:80",
    ] {
        let error = parse(&[bad], &[]).unwrap_err();
        assert!(
            error.starts_with("AGENTQ_WEB_FETCH_ALLOW entry"),
            "{bad}: {error}"
        );
        let error = parse(&[], &[bad]).unwrap_err();
        assert!(
            error.starts_with("AGENTQ_WEB_FETCH_DENY entry"),
            "{bad}: {error}"
        );
    }
    let good = [
        "10.0.0.0/8",
        "fd00::/8",
        "::1",
        "[::1]",
        "127.1",
        "Intranet.Example.",
        "*.corp.example",
    ];
    assert_eq!(parse(&good, &good), Ok(()));
}
