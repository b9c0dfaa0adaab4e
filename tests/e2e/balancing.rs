//! byrequests through the real binary: Apache's exact sequences (docs/apache-behaviour.md §2.2–2.4).

use std::collections::BTreeMap;

use crate::support::*;

/// Client sends 12 requests one after another; the members that answer, in order.
async fn sequence(weights: (u32, u32), n: usize) -> Vec<String> {
    let (web1, web2) = two_backends().await;
    let config = balancer_config(
        &[(&web1.url(), "web1", weights.0), (&web2.url(), "web2", weights.1)],
        "lbmethod = \"byrequests\"",
        "",
    );
    let fulcrum = Fulcrum::start(&config);
    let client = client();
    let mut order = Vec::new();
    for _ in 0..n {
        let answer = get(&client, &fulcrum.url("/"), &[]).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        order.push(answer.served_by().to_string());
    }
    order
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equal_weights_alternate_starting_with_the_first_member() {
    let expected: Vec<&str> = ["web1", "web2"].repeat(6);
    assert_eq!(sequence((1, 1), 12).await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_one_to_two_give_web2_web1_web2() {
    let expected: Vec<&str> = ["web2", "web1", "web2"].repeat(4);
    assert_eq!(sequence((1, 2), 12).await, expected);
}

/// Balancing is per request, not per connection (§2.4): one keep-alive connection alternates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_keepalive_connection_is_rebalanced_per_request() {
    let (web1, web2) = two_backends().await;
    let fulcrum = Fulcrum::start(&balancer_config(&[(&web1.url(), "web1", 1), (&web2.url(), "web2", 1)], "", ""));
    // The pooled test client reuses its one idle connection for sequential requests.
    let client = client();
    let mut order = Vec::new();
    for _ in 0..6 {
        order.push(get(&client, &fulcrum.url("/"), &[]).await.served_by().to_string());
    }
    assert_eq!(order, ["web1", "web2", "web1", "web2", "web1", "web2"]);
}

/// 300 requests at once with loadfactor 1:2: exactly 100 and 200, because each selection and its
/// counter update are one step however the requests interleave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_concurrent_requests_split_exactly_one_to_two() {
    let (web1, web2) = two_backends().await;
    let fulcrum = Fulcrum::start(&balancer_config(&[(&web1.url(), "web1", 1), (&web2.url(), "web2", 2)], "", ""));
    let client = client();
    let url = fulcrum.url("/");
    let tasks: Vec<_> = (0..300)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move { get(&client, &url, &[]).await })
        })
        .collect();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for t in tasks {
        let answer = t.await.unwrap();
        assert_eq!(answer.status, 200, "{answer:?}");
        *counts.entry(answer.served_by().to_string()).or_default() += 1;
    }
    assert_eq!(counts, BTreeMap::from([("web1".into(), 100), ("web2".into(), 200)]));
    assert_eq!((web1.served(), web2.served()), (100, 200), "what the backends counted");
}

/// What the member sees: the path mapped through proxy_pass, the client's address appended to
/// X-Forwarded-For, its own Host (ProxyPreserveHost off), no hop-by-hop headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_member_sees_the_forwarded_request() {
    let (web1, _web2) = two_backends().await;
    let fulcrum = Fulcrum::start(&balancer_config(&[(&web1.url(), "web1", 1)], "", ""));
    let client = client();
    let answer =
        get(&client, &fulcrum.url("/some/path?a=1"), &[("x-forwarded-for", "10.1.2.3"), ("te", "trailers")]).await;
    assert_eq!(answer.headers["x-served-by"], "web1", "the member's response headers are relayed");
    let seen = &answer.body;
    assert!(seen.contains("request: GET /some/path?a=1 HTTP/1.1"), "{seen}");
    assert!(seen.contains("header: x-forwarded-for: 10.1.2.3, 127.0.0.1\n"), "{seen}");
    assert!(seen.contains(&format!("header: host: {}\n", web1.addr)), "{seen}");
    assert!(seen.contains(&format!("header: x-forwarded-host: {}\n", fulcrum.addr)), "{seen}");
    assert!(seen.contains("header: x-forwarded-server: www.example.com\n"), "{seen}");
    assert!(!seen.contains("header: te:"), "{seen}");
}

/// A member that refuses connections is put in error state and the request goes to the other
/// member: the client never sees the failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_fails_over_to_the_other_member() {
    let (web1, web2) = two_backends().await;
    let dead = web1.url();
    drop(web1);
    let fulcrum = Fulcrum::start(&balancer_config(&[(&dead, "web1", 1), (&web2.url(), "web2", 1)], "", ""));
    let client = client();
    for _ in 0..4 {
        let answer = get(&client, &fulcrum.url("/"), &[]).await;
        assert_eq!((answer.status.as_u16(), answer.served_by()), (200, "web2"));
    }
    assert_eq!(web2.served(), 4);
}
