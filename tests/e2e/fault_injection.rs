//! Fault injection under bounded load: one healthy member among members that are killed and
//! restarted every 2 s, reset the connection before answering, answer garbage, or accept and never
//! answer. Idempotent requests never see an error while the healthy member is usable; a request
//! with a body is never sent twice (counted at the members).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::AsyncWriteExt;

use crate::support::*;

/// How a misbehaving member treats each request, after reading its head.
#[derive(Clone, Copy, Debug)]
enum Misbehaviour {
    /// Close with a TCP reset, no answer.
    Reset,
    /// Start a status line, then reset.
    ResetMidHead,
    /// Answer bytes that are not HTTP.
    Garbage,
    /// Hold the connection, never answer.
    Silent,
}

/// A member that misbehaves as told; records the `x-request-id` of every request it read.
async fn misbehaving_member(how: Misbehaviour, seen: Arc<Mutex<Vec<String>>>) -> SocketAddr {
    raw_member(move |mut stream, head| {
        let seen = Arc::clone(&seen);
        async move {
            let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
            if let Some(id) = text.lines().find_map(|l| l.strip_prefix("x-request-id: ")) {
                seen.lock().unwrap().push(id.trim().to_string());
            }
            match how {
                Misbehaviour::Reset => {
                    let _ = stream.set_zero_linger();
                }
                Misbehaviour::ResetMidHead => {
                    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Le").await;
                    let _ = stream.set_zero_linger();
                }
                Misbehaviour::Garbage => {
                    let _ = stream.write_all(b"\x00\x01garbage that is not HTTP\r\n\r\n").await;
                }
                Misbehaviour::Silent => tokio::time::sleep(Duration::from_secs(60)).await,
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_requests_survive_failing_members_and_bodies_are_never_sent_twice() {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let healthy = EchoServer::start(any, "healthy").await.unwrap();
    let flapping = EchoServer::start(any, "flapping").await.unwrap();
    let flapping_addr = flapping.addr;
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut members = vec![("healthy", healthy.url()), ("flapping", flapping.url())];
    for (name, how) in [
        ("reset", Misbehaviour::Reset),
        ("reset-mid-head", Misbehaviour::ResetMidHead),
        ("garbage", Misbehaviour::Garbage),
        ("silent", Misbehaviour::Silent),
    ] {
        members.push((name, format!("http://{}", misbehaving_member(how, Arc::clone(&seen)).await)));
    }
    let member_lines: Vec<(&str, String)> =
        members.iter().map(|(name, url)| (url.as_str(), format!("route = \"{name}\"\nretry = 1"))).collect();
    let config = members_config(
        &member_lines.iter().map(|(u, l)| (*u, l.as_str())).collect::<Vec<_>>(),
        "timeout = 1\nfailontimeout = true\nretry_idempotent = [\"error\", \"timeout\"]",
    );
    let fulcrum = Fulcrum::start(&config);

    // The flapping member: killed and restarted every 2 s, on the same port.
    let flapping = Arc::new(tokio::sync::Mutex::new(Some(flapping)));
    let flapped_ids: Arc<Mutex<Vec<String>>> = Arc::default();
    let flapper = {
        let flapping = Arc::clone(&flapping);
        let flapped_ids = Arc::clone(&flapped_ids);
        tokio::spawn(async move {
            let mut kills = 0;
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                let mut slot = flapping.lock().await;
                match slot.take() {
                    Some(mut server) => {
                        server.stop().await;
                        flapped_ids.lock().unwrap().extend(server.request_ids());
                        kills += 1;
                    }
                    None => *slot = EchoServer::start(flapping_addr, "flapping").await.ok(),
                }
                if kills > 100 {
                    return;
                }
            }
        })
    };

    // Bounded load: 8 clients for 8 s; every fourth request is a POST with a body.
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let deadline = Instant::now() + Duration::from_secs(8);
    let outcomes: Arc<Mutex<HashMap<(String, u16), u64>>> = Arc::default();
    let posts: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut load = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let (client, url, outcomes, posts) =
            (client.clone(), fulcrum.url("/work"), Arc::clone(&outcomes), Arc::clone(&posts));
        load.spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                n += 1;
                let id = format!("w{worker}-{n}");
                let post = n.is_multiple_of(4);
                let request = if post {
                    posts.lock().unwrap().push(id.clone());
                    Request::post(&url).header("x-request-id", &id).body(Full::new(Bytes::from_static(b"payload")))
                } else {
                    Request::get(&url).header("x-request-id", &id).body(Full::new(Bytes::new()))
                };
                let status = match tokio::time::timeout(Duration::from_secs(30), client.request(request.unwrap())).await
                {
                    Ok(Ok(response)) => {
                        let status = response.status().as_u16();
                        let _ = response.into_body().collect().await;
                        status
                    }
                    _ => 0,
                };
                let method = if post { "POST" } else { "GET" };
                *outcomes.lock().unwrap().entry((method.to_string(), status)).or_default() += 1;
            }
        });
    }
    while load.join_next().await.is_some() {}
    flapper.abort();

    let outcomes = outcomes.lock().unwrap().clone();
    let gets: u64 = outcomes.iter().filter(|((m, _), _)| m == "GET").map(|(_, n)| n).sum();
    let failed_gets: u64 = outcomes.iter().filter(|((m, s), _)| m == "GET" && *s != 200).map(|(_, n)| n).sum();
    eprintln!("outcomes (method, status) → count: {outcomes:?}");
    assert!(gets > 50, "the load ran: {outcomes:?}");
    assert_eq!(failed_gets, 0, "idempotent requests saw errors: {outcomes:?}\n{}", fulcrum.log());

    // Every POST reached at most one member, once.
    let mut reached: HashMap<String, u32> = HashMap::new();
    let mut flapping_ids = flapped_ids.lock().unwrap().clone();
    flapping_ids.extend(flapping.lock().await.as_ref().map(|s| s.request_ids()).unwrap_or_default());
    for id in seen.lock().unwrap().iter().chain(healthy.request_ids().iter()).chain(flapping_ids.iter()) {
        *reached.entry(id.clone()).or_default() += 1;
    }
    let posts = posts.lock().unwrap().clone();
    let twice: Vec<_> = posts.iter().filter(|id| reached.get(*id).copied().unwrap_or(0) > 1).collect();
    assert!(twice.is_empty(), "POSTs sent twice: {twice:?}");
    let log = fulcrum.log();
    assert!(log.contains("trying another member"), "retries are logged:\n{log}");
    let kills = flapped_ids.lock().unwrap().len();
    eprintln!("requests answered by the flapping member's killed instances: {kills}");
}
