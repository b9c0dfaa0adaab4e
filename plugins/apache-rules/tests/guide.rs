//! The Linode guide's rules, verbatim, against the observed Apache behaviour
//! (docs/apache-behaviour.md §6.2 for X-Forwarded-For, §4.3–4.5 for the response headers).

mod common;

use apache_rules::testing::*;
use common::*;

/// The guide's rules, as `examples/apache-guide.toml` carries them (one source for every test).
fn guide() -> &'static str {
    let example = include_str!("../../../examples/apache-guide.toml");
    let start = example.find("directives = '''").expect("the example has directives") + "directives = '''".len();
    let end = start + example[start..].find("'''").expect("closed");
    &example[start..end]
}

/// What the host passes on every call.
fn host_env() -> Vec<(String, String)> {
    env(&[("FULCRUM_REQUEST_START_US", "1700000000000000"), ("FULCRUM_NOW_US", "1700000000000100")])
}

#[test]
fn the_guide_declares_exactly_what_it_reads() {
    let (_, needs) = plugin(guide());
    assert_eq!(needs.fields, RequestFields::CLIENT_ADDR);
    assert_eq!(needs.request_headers, ["x-forwarded-for"]);
    assert!(needs.response_headers.is_empty());
}

/// docs/apache-behaviour.md §6.2, column "with mod_ssl loaded" (Fulcrum's `%{REMOTE_ADDR}s` is the client), minus
/// the `, <client>` the host appends afterwards: the plugin produces the first element.
#[test]
fn x_forwarded_for_follows_the_behaviour_table() {
    let rows: &[(&[&str], &str, Option<&str>)] = &[
        (&[], "127.0.0.1", None),
        (&["1.2.3.4"], "1.2.3.4", Some("1.2.3.4")),
        (&["1.2.3.4, 5.6.7.8"], "1.2.3.4", Some("1.2.3.4")),
        (&["garbage"], "127.0.0.1", None),
        (&["::1"], "127.0.0.1", None),
        (&["1.2.3"], "127.0.0.1", None),
        (&[""], "127.0.0.1", None),
        (&["2001:db8::1"], "2001", Some("2001")),
        (&["2001:db8::1234:5678"], "2001", Some("2001")),
        (&["unknown, 10.0.0.1"], "10.0.0.1", Some("10.0.0.1")),
        (&["1.2.3.4.5"], "1.2.3.4.", Some("1.2.3.4.")),
        (&["999.999.999.999"], "999.999.999.999", Some("999.999.999.999")),
        (&["12345678"], "12345678", Some("12345678")),
        (&["1.1.1.1", "2.2.2.2"], "1.1.1.1", Some("1.1.1.1")),
    ];
    let (mut rules, _) = plugin(guide());
    for (incoming, expected, forward_ip) in rows {
        let lines: Pairs = incoming.iter().map(|v| ("x-forwarded-for", *v)).collect();
        let outcome = rules.on_request(&request("127.0.0.1", &lines), &host_env());
        assert_eq!(headers(&outcome), [h("set", "X-Forwarded-For", expected)], "incoming {incoming:?}");
        let env_expected: EnvActions =
            forward_ip.iter().map(|ip| ("FORWARD_IP".to_string(), Some(ip.to_string()))).collect();
        assert_eq!(env_actions(&outcome), env_expected, "incoming {incoming:?}");
    }
}

#[test]
fn an_ipv6_client_without_x_forwarded_for_is_its_own_address() {
    let (mut rules, _) = plugin(guide());
    let outcome = rules.on_request(&request("::1", &[]), &host_env());
    assert_eq!(headers(&outcome), [h("set", "X-Forwarded-For", "::1")]);
}

#[test]
fn the_guide_adds_nothing_to_the_request_in_the_response_phase_and_vice_versa() {
    let (mut rules, _) = plugin(guide());
    let outcome = rules.on_request(&request("127.0.0.1", &[]), &env(&[("BALANCER_ROUTE_CHANGED", "1")]));
    assert!(headers(&outcome).iter().all(|(_, name, _)| name == "X-Forwarded-For"));
    let outcome = rules.on_response(
        &request("127.0.0.1", &[]),
        &response(200, ResponseOrigin::Proxied, &[]),
        &env(&[("FORWARD_IP", "1.2.3.4")]),
    );
    assert!(outcome.headers.is_empty() && outcome.env.is_empty());
}

/// docs/apache-behaviour.md §4.1–4.3: which headers, in config order, as separate lines.
#[test]
fn response_headers_follow_the_behaviour_order() {
    let cookie = |route: &str| h("add", "Set-Cookie", &format!("BALANCEID=balancer.{route}; path=/;"));
    let balance = |what: &str| h("add", "X-Balance", what);
    let rows: Vec<(&str, Pairs, Vec<Header>)> = vec![
        (
            "no cookie: the lb algorithm chose web1",
            vec![("BALANCER_ROUTE_CHANGED", "1"), ("BALANCER_WORKER_ROUTE", "web1")],
            vec![cookie("web1"), balance("BALANCER_ROUTE_CHANGED=1"), balance("BALANCER_WORKER_ROUTE=web1")],
        ),
        (
            "sticky route honoured",
            vec![("BALANCER_WORKER_ROUTE", "web2"), ("BALANCER_SESSION_ROUTE", "web2")],
            vec![balance("BALANCER_WORKER_ROUTE=web2"), balance("BALANCER_SESSION_ROUTE=web2")],
        ),
        (
            "unknown route web9, rebalanced to web1",
            vec![
                ("BALANCER_ROUTE_CHANGED", "1"),
                ("BALANCER_WORKER_ROUTE", "web1"),
                ("BALANCER_SESSION_ROUTE", "web9"),
            ],
            vec![
                cookie("web1"),
                balance("BALANCER_ROUTE_CHANGED=1"),
                balance("BALANCER_WORKER_ROUTE=web1"),
                balance("BALANCER_SESSION_ROUTE=web9"),
            ],
        ),
        (
            "route with a quote kept verbatim",
            vec![
                ("BALANCER_ROUTE_CHANGED", "1"),
                ("BALANCER_WORKER_ROUTE", "web2"),
                ("BALANCER_SESSION_ROUTE", "web2\""),
            ],
            vec![
                cookie("web2"),
                balance("BALANCER_ROUTE_CHANGED=1"),
                balance("BALANCER_WORKER_ROUTE=web2"),
                balance("BALANCER_SESSION_ROUTE=web2\""),
            ],
        ),
        ("a request that did not go through the balancer (§4.6)", vec![], vec![]),
    ];
    let (mut rules, _) = plugin(guide());
    for (scenario, balancer_env, expected) in rows {
        let mut full_env = host_env();
        full_env.extend(env(&[("FORWARD_IP", "1.2.3.4")]));
        full_env.extend(env(&balancer_env));
        let backend_cookie = [("set-cookie", "session=abc")];
        let outcome = rules.on_response(
            &request("127.0.0.1", &[]),
            &response(200, ResponseOrigin::Proxied, &backend_cookie),
            &full_env,
        );
        assert_eq!(headers(&outcome), expected, "{scenario}");
        assert!(outcome.env.is_empty(), "{scenario}");
    }
}

/// docs/apache-behaviour.md §4.5: every proxied status carries them; Apache-generated responses never do.
#[test]
fn onsuccess_headers_go_on_every_proxied_status_and_never_on_generated_responses() {
    let (mut rules, _) = plugin(guide());
    let mut balancer_env = host_env();
    balancer_env.extend(env(&[("BALANCER_ROUTE_CHANGED", "1"), ("BALANCER_WORKER_ROUTE", "web1")]));
    for status in [200, 302, 404, 410, 500, 503] {
        let outcome = rules.on_response(
            &request("127.0.0.1", &[]),
            &response(status, ResponseOrigin::Proxied, &[]),
            &balancer_env,
        );
        assert_eq!(headers(&outcome).len(), 3, "proxied {status}");
    }
    for status in [400, 403, 404, 405, 414, 502, 503] {
        let outcome = rules.on_response(
            &request("127.0.0.1", &[]),
            &response(status, ResponseOrigin::Generated, &[]),
            &balancer_env,
        );
        assert!(outcome.headers.is_empty(), "generated {status}");
    }
}
