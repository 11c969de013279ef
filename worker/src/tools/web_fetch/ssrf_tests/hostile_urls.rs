//! The hostile URLs every one of which `web_fetch` must refuse before any lookup or connection,
//! each with the words its refusal must contain. `p` is the counting listener's IPv4 port, `q` its
//! IPv6 port, so that a missing check would connect to it.

pub(super) fn hostile_urls(p: u16, q: u16) -> Vec<(String, &'static str)> {
    let loopback = "is loopback (127.0.0.0/8)";
    let mapped_loopback = "::ffff:127.0.0.1 (IPv4-mapped 127.0.0.1) is loopback (127.0.0.0/8)";
    let metadata = "169.254.169.254 is link-local (cloud metadata) (169.254.0.0/16)";
    let mapped_metadata = "(IPv4-mapped 169.254.169.254) is link-local (cloud metadata)";
    let unspecified = "0.0.0.0 is unspecified (\"this network\") (0.0.0.0/8)";
    let localhost = "localhost is a loopback name (localhost, RFC 6761)";
    let credentials = "the URL carries credentials";
    #[rustfmt::skip]
    let table: Vec<(String, &str)> = vec![
        (format!("http://127.0.0.1:{p}/"), loopback),
        (format!("http://127.1:{p}/"), loopback),
        (format!("http://2130706433:{p}/"), loopback),
        (format!("http://0x7f000001:{p}/"), loopback),
        (format!("http://0x7f.0.0.1:{p}/"), loopback),
        (format!("http://0177.0.0.1:{p}/"), loopback),
        (format!("http://017700000001:{p}/"), loopback),
        (format!("http://127.000.000.1:{p}/"), loopback),
        (format!("http://127.0.0.1.:{p}/"), loopback),
        (format!("http://%31%32%37.0.0.1:{p}/"), loopback),
        (format!("http://127.0.0.2:{p}/"), loopback),
        (format!("https://127.0.0.1:{p}/"), loopback),
        (format!("http://[::ffff:127.0.0.1]:{p}/"), mapped_loopback),
        (format!("http://[::ffff:7f00:1]:{p}/"), mapped_loopback),
        (format!("http://[0:0:0:0:0:ffff:127.0.0.1]:{p}/"), mapped_loopback),
        (format!("http://[::127.0.0.1]:{p}/"), "::7f00:1 is IPv4-compatible (deprecated) (::/96)"),
        (format!("http://[::1]:{q}/"), "::1 is loopback (::1/128)"),
        (format!("http://[0:0:0:0:0:0:0:1]:{q}/"), "::1 is loopback (::1/128)"),
        (format!("http://0.0.0.0:{p}/"), unspecified),
        (format!("http://0:{p}/"), unspecified),
        (format!("http://[::]:{q}/"), ":: is unspecified (::/128)"),
        (format!("http://localhost:{p}/"), localhost),
        (format!("http://LOCALHOST.:{p}/"), localhost),
        (format!("http://localhost.:{p}/"), localhost),
        (format!("http://ip6-localhost:{q}/"), "ip6-localhost is a loopback name"),
        (format!("http://ip6-loopback:{q}/"), "ip6-loopback is a loopback name"),
        (format!("http://api.localhost:{p}/"), "(*.localhost, RFC 6761)"),
        ("http://169.254.169.254/latest/meta-data/".into(), metadata),
        ("http://2852039166/".into(), metadata),
        ("http://0xa9fea9fe/".into(), metadata),
        ("http://0251.0376.0251.0376/".into(), metadata),
        ("http://[::ffff:169.254.169.254]/".into(), mapped_metadata),
        ("http://[::ffff:a9fe:a9fe]/".into(), mapped_metadata),
        ("http://[fd00:ec2::254]/".into(), "unique-local (private) (fc00::/7)"),
        ("http://metadata.google.internal/computeMetadata/v1/".into(), "(*.internal)"),
        ("http://printer.local/".into(), "(*.local, RFC 6762)"),
        ("http://10.0.0.1/".into(), "10.0.0.1 is private (10.0.0.0/8)"),
        ("http://172.16.0.1/".into(), "172.16.0.1 is private (172.16.0.0/12)"),
        ("http://192.168.1.1/".into(), "192.168.1.1 is private (192.168.0.0/16)"),
        ("http://100.64.0.1/".into(), "shared address space (carrier-grade NAT) (100.64.0.0/10)"),
        ("http://[fd00::1]/".into(), "fd00::1 is unique-local (private) (fc00::/7)"),
        ("http://[fe80::1]/".into(), "fe80::1 is link-local (fe80::/10)"),
        ("http://[fec0::1]/".into(), "fec0::1 is site-local (deprecated) (fec0::/10)"),
        (format!("http://[64:ff9b::7f00:1]:{p}/"), "64:ff9b::7f00:1 is NAT64 (64:ff9b::/96)"),
        ("http://[64:ff9b:1::a00:1]/".into(), "is local-use NAT64 (64:ff9b:1::/48)"),
        (format!("http://[2002:7f00:1::]:{p}/"), "2002:7f00:1:: is 6to4 (2002::/16)"),
        ("http://[2001::1]/".into(), "2001::1 is Teredo (2001::/32)"),
        ("http://[2001:db8::1]/".into(), "2001:db8::1 is documentation (2001:db8::/32)"),
        ("http://[ff02::1]/".into(), "ff02::1 is multicast (ff00::/8)"),
        ("http://[100::1]/".into(), "100::1 is discard-only (100::/64)"),
        ("http://224.0.0.1/".into(), "224.0.0.1 is multicast (224.0.0.0/4)"),
        ("http://255.255.255.255/".into(), "255.255.255.255 is broadcast (255.255.255.255/32)"),
        ("http://198.18.0.1/".into(), "198.18.0.1 is benchmarking (198.18.0.0/15)"),
        ("http://192.0.2.1/".into(), "192.0.2.1 is documentation (TEST-NET-1) (192.0.2.0/24)"),
        ("http://192.0.0.1/".into(), "192.0.0.1 is IETF protocol assignments (192.0.0.0/24)"),
        ("http://240.0.0.1/".into(), "240.0.0.1 is reserved (240.0.0.0/4)"),
        ("file:///etc/passwd".into(), "scheme \"file\" is not allowed"),
        (format!("ftp://127.0.0.1:{p}/"), "scheme \"ftp\" is not allowed"),
        (format!("gopher://127.0.0.1:{p}/_GET%20/"), "scheme \"gopher\" is not allowed"),
        (format!("dict://127.0.0.1:{p}/info"), "scheme \"dict\" is not allowed"),
        (format!("ldap://127.0.0.1:{p}/"), "scheme \"ldap\" is not allowed"),
        (format!("ws://127.0.0.1:{p}/"), "scheme \"ws\" is not allowed"),
        ("javascript:alert(1)".into(), "scheme \"javascript\" is not allowed"),
        ("data:text/html,<script>alert(1)</script>".into(), "scheme \"data\" is not allowed"),
        (format!("http://user:pw@127.0.0.1:{p}/"), credentials),
        (format!("http://example.com@127.0.0.1:{p}/"), credentials),
        (format!("http://:pw@127.0.0.1:{p}/"), credentials),
    ];
    table
}
