//! The Apache guide's whole configuration (`examples/apache-guide.toml`) through the real binary:
//! what the member sees (docs/apache-behaviour.md §6.2) and what the client gets (§4.1–4.5).

use crate::support::*;

/// The guide's config with its listener on port 0 and its members replaced by test backends.
fn guide_config(web1: &EchoServer, web2: &EchoServer) -> String {
    std::fs::read_to_string(repo_root().join("examples/apache-guide.toml"))
        .unwrap()
        .replace("127.0.0.1:8080", "127.0.0.1:0")
        .replace("http://127.0.0.1:18001", &web1.url())
        .replace("http://127.0.0.1:18002", &web2.url())
}

fn values<'a>(answer: &'a Answer, name: &str) -> Vec<&'a str> {
    answer.headers.get_all(name).iter().map(|v| v.to_str().unwrap()).collect()
}

fn seen_header<'a>(answer: &'a Answer, name: &str) -> Option<&'a str> {
    answer.body.lines().find_map(|l| l.strip_prefix(&format!("header: {name}: ")))
}

/// §6.2: client sends X-Forwarded-For (or not), the member sees exactly two entries: the regex's
/// client (or the peer, Fulcrum's choice for `%{REMOTE_ADDR}s`) and the real peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_forwarded_for_as_the_guide_rules_make_it() {
    let (web1, web2) = two_backends().await;
    let fulcrum = Fulcrum::start(&guide_config(&web1, &web2));
    let client = client();
    let rows: &[(&[&str], &str)] = &[
        (&[], "127.0.0.1, 127.0.0.1"),
        (&["1.2.3.4"], "1.2.3.4, 127.0.0.1"),
        (&["1.2.3.4, 5.6.7.8"], "1.2.3.4, 127.0.0.1"),
        (&["garbage"], "127.0.0.1, 127.0.0.1"),
        (&["::1"], "127.0.0.1, 127.0.0.1"),
        (&["1.2.3"], "127.0.0.1, 127.0.0.1"),
        (&[""], "127.0.0.1, 127.0.0.1"),
        (&["2001:db8::1"], "2001, 127.0.0.1"),
        (&["2001:db8::1234:5678"], "2001, 127.0.0.1"),
        (&["unknown, 10.0.0.1"], "10.0.0.1, 127.0.0.1"),
        (&["1.2.3.4.5"], "1.2.3.4., 127.0.0.1"),
        (&["999.999.999.999"], "999.999.999.999, 127.0.0.1"),
        (&["12345678"], "12345678, 127.0.0.1"),
        (&["1.1.1.1", "2.2.2.2"], "1.1.1.1, 127.0.0.1"),
    ];
    for (incoming, expected) in rows {
        let headers: Vec<(&str, &str)> = incoming.iter().map(|v| ("x-forwarded-for", *v)).collect();
        let answer = get(&client, &fulcrum.url("/"), &headers).await;
        assert_eq!(answer.status, 200);
        assert_eq!(seen_header(&answer, "x-forwarded-for"), Some(*expected), "incoming {incoming:?}");
    }
}

/// §4.1–4.3: without a valid route every response carries the cookie and the X-Balance lines, in
/// config order, after the member's own headers; with a valid route, no cookie.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_cookie_and_x_balance_as_the_guide_rules_make_them() {
    let (web1, web2) = two_backends().await;
    let fulcrum = Fulcrum::start(&guide_config(&web1, &web2));
    let client = client();
    // Client sends Cookie; client gets Set-Cookie and X-Balance lines.
    let cases: &[(Option<&str>, &[&str], &[&str])] = &[
        (None, &["BALANCEID=balancer.web1; path=/;"], &["BALANCER_ROUTE_CHANGED=1", "BALANCER_WORKER_ROUTE=web1"]),
        (None, &["BALANCEID=balancer.web2; path=/;"], &["BALANCER_ROUTE_CHANGED=1", "BALANCER_WORKER_ROUTE=web2"]),
        (Some("BALANCEID=balancer.web2"), &[], &["BALANCER_WORKER_ROUTE=web2", "BALANCER_SESSION_ROUTE=web2"]),
        (
            Some("BALANCEID=balancer.web9"),
            &["BALANCEID=balancer.web1; path=/;"],
            &["BALANCER_ROUTE_CHANGED=1", "BALANCER_WORKER_ROUTE=web1", "BALANCER_SESSION_ROUTE=web9"],
        ),
        (
            // No dot: no route at all (§3.3). The sticky request above charged web2: web1 is next.
            Some("BALANCEID=web2"),
            &["BALANCEID=balancer.web1; path=/;"],
            &["BALANCER_ROUTE_CHANGED=1", "BALANCER_WORKER_ROUTE=web1"],
        ),
    ];
    for (cookie, set_cookie, x_balance) in cases {
        let headers: Vec<(&str, &str)> = cookie.iter().map(|c| ("cookie", *c)).collect();
        let answer = get(&client, &fulcrum.url("/"), &headers).await;
        assert_eq!(values(&answer, "set-cookie"), *set_cookie, "Cookie: {cookie:?}");
        assert_eq!(values(&answer, "x-balance"), *x_balance, "Cookie: {cookie:?}");
    }
}

/// §4.4–4.5: the member's Set-Cookie comes first; proxied error statuses carry the headers,
/// Fulcrum's own error pages do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onsuccess_headers_follow_the_members_and_skip_generated_errors() {
    let (mut web1, mut web2) = two_backends().await;
    let fulcrum = Fulcrum::start(&guide_config(&web1, &web2));
    let client = client();
    let merged = get(&client, &fulcrum.url("/set-cookie/app=1"), &[]).await;
    assert_eq!(values(&merged, "set-cookie"), ["app=1", "BALANCEID=balancer.web1; path=/;"]);

    for status in [404, 500, 503] {
        let relayed = get(&client, &fulcrum.url(&format!("/status/{status}")), &[]).await;
        assert_eq!(relayed.status.as_u16(), status);
        assert!(!values(&relayed, "x-balance").is_empty(), "a relayed {status} carries X-Balance");
    }

    web1.stop().await;
    web2.stop().await;
    let generated = get(&client, &fulcrum.url("/"), &[]).await;
    assert_eq!(generated.status, 503);
    assert!(values(&generated, "set-cookie").is_empty() && values(&generated, "x-balance").is_empty(), "{generated:?}");
}

/// ProxyPreserveHost on: the member sees the client's Host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_member_sees_the_clients_host() {
    let (web1, web2) = two_backends().await;
    let fulcrum = Fulcrum::start(&guide_config(&web1, &web2));
    let answer = get(&client(), &fulcrum.url("/"), &[("host", "Other.Test:1234")]).await;
    assert_eq!(seen_header(&answer, "host"), Some("Other.Test:1234"));
}
