//! Sticky sessions through the real binary (docs/apache-behaviour.md §2.5, §3.4–3.8).

use crate::support::*;

const STICKY: &str = "stickysession = \"BALANCEID\"";

/// Client sends these Cookie headers in turn (None: no cookie); the members that answer.
async fn answers(cookies: &[Option<&str>]) -> Vec<String> {
    let (web1, web2) = two_backends().await;
    let fulcrum = Fulcrum::start(&balancer_config(&[(&web1.url(), "web1", 1), (&web2.url(), "web2", 1)], STICKY, ""));
    let client = client();
    let mut out = Vec::new();
    for cookie in cookies {
        let headers: Vec<(&str, &str)> = cookie.iter().map(|c| ("cookie", *c)).collect();
        let answer = get(&client, &fulcrum.url("/"), &headers).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        out.push(answer.served_by().to_string());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_route_wins_every_time() {
    let web2 = Some("BALANCEID=balancer.web2");
    assert_eq!(answers(&[web2, web2, web2, web2]).await, ["web2"; 4]);
}

/// §2.5: 1 unsticky (web1) + 3 sticky to web1 charge the counters, so the next 4 unsticky requests
/// all go to web2, then alternation resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_requests_advance_the_byrequests_counters() {
    let web1 = Some("BALANCEID=balancer.web1");
    let order = answers(&[None, web1, web1, web1, None, None, None, None, None, None]).await;
    assert_eq!(order, ["web1", "web1", "web1", "web1", "web2", "web2", "web2", "web2", "web1", "web2"]);
}

/// Cookie formats (§3.2–3.3): which ones pin the request to web2. The first request of a fresh
/// balancer without a route goes to web1, so "web1" means "not sticky".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_formats() {
    let cases = [
        ("a=1; BALANCEID=balancer.web2; b=2", "web2"),
        ("BALANCEID = x.web2", "web2"),
        ("BALANCEID=.web2", "web2"),
        ("BALANCEID=web2", "web1"),
        ("XBALANCEID=x.web2", "web1"),
        ("balanceid=x.web2", "web1"),
        ("BALANCEID=balancer.WEB2", "web1"),
        ("BALANCEID=balancer.web9", "web1"),
    ];
    for (cookie, expected) in cases {
        assert_eq!(answers(&[Some(cookie)]).await, [expected], "Cookie: {cookie}");
    }
}

/// §3.1: the URL is searched before the cookie.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_route_wins_over_the_cookie() {
    let (web1, web2) = two_backends().await;
    let fulcrum = Fulcrum::start(&balancer_config(&[(&web1.url(), "web1", 1), (&web2.url(), "web2", 1)], STICKY, ""));
    let client = client();
    for path in ["/f?BALANCEID=x.web2", "/f;BALANCEID=x.web2", "/f?a=1&BALANCEID=x.web2&b=2", "/fBALANCEID=x.web2"] {
        let answer = get(&client, &fulcrum.url(path), &[("cookie", "BALANCEID=x.web1")]).await;
        assert_eq!(answer.served_by(), "web2", "{path}");
        assert!(
            answer.body.contains(&format!("request: GET {path} ")),
            "the URL is forwarded unchanged: {}",
            answer.body
        );
    }
}

/// §3.6–3.7: a route whose member refuses connections is re-balanced to a usable member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_to_a_dead_member_is_rebalanced() {
    let (web1, web2) = two_backends().await;
    let dead = web2.url();
    drop(web2);
    let fulcrum = Fulcrum::start(&balancer_config(&[(&web1.url(), "web1", 1), (&dead, "web2", 1)], STICKY, ""));
    let client = client();
    for _ in 0..3 {
        let answer = get(&client, &fulcrum.url("/"), &[("cookie", "BALANCEID=balancer.web2")]).await;
        assert_eq!((answer.status.as_u16(), answer.served_by()), (200, "web1"));
    }
}

/// nofailover: the same dead route gets a 503 instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nofailover_answers_503_for_a_dead_route() {
    let (web1, web2) = two_backends().await;
    let dead = web2.url();
    drop(web2);
    let config =
        balancer_config(&[(&web1.url(), "web1", 1), (&dead, "web2", 1)], &format!("{STICKY}\nnofailover = true"), "");
    let fulcrum = Fulcrum::start(&config);
    let client = client();
    // The first request finds web2 refusing and puts it in error state...
    let _ = get(&client, &fulcrum.url("/"), &[("cookie", "BALANCEID=balancer.web2")]).await;
    // ...after which the route's member is known to be down.
    let answer = get(&client, &fulcrum.url("/"), &[("cookie", "BALANCEID=balancer.web2")]).await;
    assert_eq!(answer.status, 503);
    assert_eq!(web1.served(), 1, "only the first request, failed over before web2 was known dead");
}
