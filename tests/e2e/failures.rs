//! Failure handling through the real binary (docs/apache-behaviour.md §5).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::support::*;

/// §5.6: failonstatus relays the member's response, does not retry it, and takes the member out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failonstatus_relays_the_response_and_takes_the_member_out() {
    let (web1, web2) = two_backends().await;
    let config = balancer_config(&[(&web1.url(), "web1", 1), (&web2.url(), "web2", 1)], "failonstatus = [410]", "");
    let fulcrum = Fulcrum::start(&config);
    let client = client();
    let gone = get(&client, &fulcrum.url("/status/410"), &[]).await;
    assert_eq!((gone.status.as_u16(), gone.served_by()), (410, "web1"), "relayed from web1, not retried");
    assert_eq!(web2.served(), 0);
    for _ in 0..3 {
        assert_eq!(get(&client, &fulcrum.url("/"), &[]).await.served_by(), "web2", "web1 is in error state");
    }
}

/// §5.7: other error statuses are relayed and do not affect the member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_error_statuses_are_just_relayed() {
    let (web1, web2) = two_backends().await;
    let fulcrum = Fulcrum::start(&balancer_config(
        &[(&web1.url(), "web1", 1), (&web2.url(), "web2", 1)],
        "failonstatus = [410]",
        "",
    ));
    let client = client();
    let mut order = Vec::new();
    for path in ["/status/500", "/status/503", "/status/404", "/"] {
        let a = get(&client, &fulcrum.url(path), &[]).await;
        order.push((a.status.as_u16(), a.served_by().to_string()));
    }
    let expected = [(500, "web1"), (503, "web2"), (404, "web1"), (200, "web2")];
    assert_eq!(order, expected.map(|(s, m)| (s, m.to_string())));
}

/// §5.8: a member slower than its timeout gets a 502, not retried; failontimeout takes it out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_is_a_502_and_failontimeout_takes_the_member_out() {
    let (web1, web2) = two_backends().await;
    let config =
        balancer_config(&[(&web1.url(), "web1", 1), (&web2.url(), "web2", 1)], "failontimeout = true\ntimeout = 1", "");
    let fulcrum = Fulcrum::start(&config);
    let client = client();
    let slow = get(&client, &fulcrum.url("/sleep/3000"), &[]).await;
    assert_eq!(slow.status, 502);
    assert!(slow.body.contains("<title>502 Proxy Error</title>"), "{}", slow.body);
    assert_eq!(web2.served(), 0, "a timed-out request is never sent again");
    for _ in 0..2 {
        assert_eq!(get(&client, &fulcrum.url("/"), &[]).await.served_by(), "web2");
    }
}

/// §5.4–5.5: every member refusing gives a 503; forcerecovery tries them again at once, so a
/// member that comes back is used by the very next request despite its long `retry`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_members_down_is_a_503_then_forcerecovery_retries_at_once() {
    let (web1, web2) = two_backends().await;
    let (addr1, url1, url2) = (web1.addr, web1.url(), web2.url());
    drop((web1, web2));
    let fulcrum = Fulcrum::start(&balancer_config(&[(&url1, "web1", 1), (&url2, "web2", 1)], "", ""));
    let client = client();
    let down = get(&client, &fulcrum.url("/"), &[]).await;
    assert_eq!(down.status, 503);
    assert!(down.body.contains("<title>503 Service Unavailable</title>"), "{}", down.body);

    let back = EchoServer::start(addr1, "web1").await.unwrap();
    let answer = get(&client, &fulcrum.url("/"), &[]).await;
    assert_eq!((answer.status.as_u16(), answer.served_by()), (200, "web1"));
    assert_eq!(back.served(), 1);
}

/// §5.1: a POST whose first member refuses the connection reaches the other member whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_body_fails_over_whole() {
    let (web1, web2) = two_backends().await;
    let dead = web1.url();
    drop(web1);
    let fulcrum = Fulcrum::start(&balancer_config(&[(&dead, "web1", 1), (&web2.url(), "web2", 1)], "", ""));
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let body = Bytes::from(vec![b'x'; 3000]);
    let request = Request::post(fulcrum.url("/upload")).body(Full::new(body)).unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let text = String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    assert!(text.contains("served-by: web2\n"), "{text}");
    assert!(text.contains("request: POST /upload HTTP/1.1\nbody-bytes: 3000\n"), "{text}");
}

/// Upstream connections are pooled: 20 sequential requests use far fewer than 20 connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_connections_are_kept_alive() {
    let (web1, _web2) = two_backends().await;
    // One worker: member connections belong to the worker whose client connection used them.
    let config = balancer_config(&[(&web1.url(), "web1", 1)], "", "");
    let fulcrum = Fulcrum::start_with_env(&config, "warn", &[("FULCRUM_WORKERS", "1")]);
    let client = client();
    for _ in 0..20 {
        assert_eq!(get(&client, &fulcrum.url("/"), &[]).await.status, 200);
    }
    assert_eq!(web1.served(), 20);
    assert_eq!(web1.connections(), 1, "one keep-alive connection carried all 20 requests");
}
