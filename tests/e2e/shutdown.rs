//! Stopping with SIGTERM or SIGINT (`server::Workers::shutdown`): the request in flight gets its
//! whole response, a new connection is refused, idle keep-alive connections are closed, and the
//! process exits 0 as soon as nothing is left, or at `shutdown_timeout` when something is.
//! Every wait is bounded: a Fulcrum that hangs fails the test instead of stalling the suite.

use std::net::SocketAddr;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use tokio::time::timeout;

use crate::support::*;

const BODY: &str = "the whole body of the answer\n";

/// A member that answers `GET /slow` after `slow` (never, with `None`) and anything else at once,
/// each time with [`BODY`]; the first line of every request it gets comes out of the receiver.
async fn member(slow: Option<Duration>) -> (SocketAddr, UnboundedReceiver<String>) {
    let (seen, requests) = unbounded_channel();
    let addr = raw_member(move |mut stream, head| {
        let seen = seen.clone();
        async move {
            let line = String::from_utf8_lossy(&head).lines().next().unwrap_or_default().to_string();
            let is_slow = line.starts_with("GET /slow ");
            let _ = seen.send(line);
            if is_slow {
                match slow {
                    Some(delay) => tokio::time::sleep(delay).await,
                    None => std::future::pending().await,
                }
            }
            let answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{BODY}", BODY.len());
            let _ = stream.write_all(answer.as_bytes()).await;
        }
    })
    .await;
    (addr, requests)
}

fn config(member: SocketAddr, top: &str) -> String {
    balancer_config(&[(&format!("http://{member}"), "web1", 1)], "", top)
}

/// A GET on `stream` (keep-alive), once the member has it: it is in flight.
async fn in_flight(stream: &mut TcpStream, path: &str, member_seen: &mut UnboundedReceiver<String>) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: www.example.com\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send the request");
    let line = timeout(Duration::from_secs(10), member_seen.recv())
        .await
        .expect("the member did not get the request within 10 s")
        .expect("the member is gone");
    assert!(line.starts_with(&format!("GET {path} ")), "the member got `{line}`");
}

/// What `stream` reads until the peer closes it (or resets it); fails past `within`.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> String {
    let mut out = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = stream.read(&mut buf).await {
            out.extend_from_slice(&buf[..n]);
        }
    };
    timeout(within, read).await.unwrap_or_else(|_| panic!("the connection is still open after {within:?}"));
    String::from_utf8_lossy(&out).into_owned()
}

/// Poll until the log has `text`; fails past `within`, showing the log.
async fn wait_for_log(fulcrum: &Fulcrum, text: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while !fulcrum.log().contains(text) {
        assert!(Instant::now() < deadline, "no `{text}` in the log within {within:?}:\n{}", fulcrum.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How the process ended, once it has; fails past `within`, showing the log.
async fn exit(fulcrum: &mut Fulcrum, within: Duration) -> ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = fulcrum.exited() {
            return status;
        }
        assert!(Instant::now() < deadline, "fulcrum still runs {within:?} after the signal:\n{}", fulcrum.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// SIGTERM during a slow request: the request completes with 200 and its whole body (and is in
/// the access log), a connection attempted after the signal is refused, and the process exits 0
/// once the request is done, long before the 30 s deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_request_in_flight_finish_refuses_new_connections_and_exits_0() {
    let (member, mut seen) = member(Some(Duration::from_millis(1500))).await;
    let mut fulcrum = Fulcrum::start(&config(member, "access_log = \"access.log\""));
    let addr = fulcrum.addr;
    let mut slow = TcpStream::connect(addr).await.unwrap();
    in_flight(&mut slow, "/slow", &mut seen).await;

    let signalled = Instant::now();
    fulcrum.signal("TERM");
    wait_for_log(&fulcrum, "shutting down: 1 connections open, waiting up to 30s", Duration::from_secs(10)).await;

    // Refused at once (the kernel answers the SYN with a reset), neither served nor left waiting.
    match timeout(Duration::from_secs(5), TcpStream::connect(addr)).await {
        Err(_) => panic!("a connection attempted after SIGTERM hangs"),
        Ok(Ok(_)) => panic!("a connection attempted after SIGTERM was accepted"),
        Ok(Err(e)) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}"),
    }

    let response = read_until_closed(&mut slow, Duration::from_secs(10)).await;
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.ends_with(&format!("\r\n\r\n{BODY}")), "the whole body: {response}");
    // Its connection closes after the answer instead of waiting for another request.
    assert!(response.to_ascii_lowercase().contains("\r\nconnection: close\r\n"), "{response}");

    let status = exit(&mut fulcrum, Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "{status}:\n{}", fulcrum.log());
    assert!(signalled.elapsed() < Duration::from_secs(10), "exited {:?} after the signal", signalled.elapsed());
    assert!(fulcrum.log().contains("shut down: every connection finished"), "{}", fulcrum.log());
    let access_log = std::fs::read_to_string(fulcrum.file("access.log")).unwrap_or_default();
    assert!(access_log.contains("\"GET /slow HTTP/1.1\" 200 "), "access log:\n{access_log}");
}

/// An idle keep-alive connection is closed by Fulcrum at SIGINT (its read sees the end) and does
/// not hold up the exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_closes_an_idle_keep_alive_connection_and_exits_0_at_once() {
    let (member, mut seen) = member(None).await;
    let mut fulcrum = Fulcrum::start(&config(member, ""));
    let mut idle = TcpStream::connect(fulcrum.addr).await.unwrap();
    in_flight(&mut idle, "/fast", &mut seen).await;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.ends_with(BODY.as_bytes()) {
        let n = timeout(Duration::from_secs(10), idle.read(&mut buf)).await.expect("no answer").expect("read");
        assert!(n > 0, "closed before its answer: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 200 OK\r\n"), "{}", String::from_utf8_lossy(&answer));

    let signalled = Instant::now();
    fulcrum.signal("INT");
    let after = read_until_closed(&mut idle, Duration::from_secs(5)).await;
    assert_eq!(after, "", "an idle connection gets nothing more, just its end");

    let status = exit(&mut fulcrum, Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "{status}:\n{}", fulcrum.log());
    assert!(signalled.elapsed() < Duration::from_secs(5), "exited {:?} after the signal", signalled.elapsed());
    let log = fulcrum.log();
    assert!(log.contains("SIGINT: stopping") && log.contains("shutting down: 1 connections open"), "{log}");
}

/// With `shutdown_timeout = 1` and a request whose member never answers, the process exits 0
/// after about a second (not 30), cutting that connection and saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_shutdown_timeout_the_process_exits_0_anyway() {
    let (member, mut seen) = member(None).await;
    let mut fulcrum = Fulcrum::start(&config(member, "shutdown_timeout = 1"));
    let mut stuck = TcpStream::connect(fulcrum.addr).await.unwrap();
    in_flight(&mut stuck, "/slow", &mut seen).await;

    let signalled = Instant::now();
    fulcrum.signal("TERM");
    let status = exit(&mut fulcrum, Duration::from_secs(10)).await;
    let waited = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "{status}:\n{}", fulcrum.log());
    assert!(waited >= Duration::from_secs(1), "exited after {waited:?}, before the deadline");
    let log = fulcrum.log();
    assert!(log.contains("waiting up to 1s"), "{log}");
    assert!(log.contains("shutdown_timeout (1s) has passed: exiting, cutting 1 connections still open"), "{log}");
    let response = read_until_closed(&mut stuck, Duration::from_secs(5)).await;
    assert_eq!(response, "", "the cut connection got no answer");
}

/// `shutdown_timeout` is read when the signal comes: a configuration reload changes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloaded_shutdown_timeout_applies() {
    let (member, mut seen) = member(None).await;
    let mut fulcrum = Fulcrum::start(&config(member, ""));
    fulcrum.rewrite_config(&config(member, "shutdown_timeout = 1"));
    fulcrum.signal("HUP");
    wait_for_log(&fulcrum, "configuration reloaded from", Duration::from_secs(10)).await;
    let mut stuck = TcpStream::connect(fulcrum.addr).await.unwrap();
    in_flight(&mut stuck, "/slow", &mut seen).await;

    let signalled = Instant::now();
    fulcrum.signal("TERM");
    let status = exit(&mut fulcrum, Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "{status}:\n{}", fulcrum.log());
    assert!(fulcrum.log().contains("waiting up to 1s"), "{}", fulcrum.log());
    assert!(signalled.elapsed() < Duration::from_secs(10), "exited {:?} after the signal", signalled.elapsed());
}

/// A second signal while waiting stops at once (like a second Ctrl-C), still with 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_stops_without_waiting() {
    let (member, mut seen) = member(None).await;
    let mut fulcrum = Fulcrum::start(&config(member, ""));
    let mut stuck = TcpStream::connect(fulcrum.addr).await.unwrap();
    in_flight(&mut stuck, "/slow", &mut seen).await;

    fulcrum.signal("TERM");
    wait_for_log(&fulcrum, "waiting up to 30s", Duration::from_secs(10)).await;
    let again = Instant::now();
    fulcrum.signal("TERM");
    let status = exit(&mut fulcrum, Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "{status}:\n{}", fulcrum.log());
    assert!(again.elapsed() < Duration::from_secs(5), "exited {:?} after the second signal", again.elapsed());
    assert!(fulcrum.log().contains("SIGTERM again: exiting without waiting"), "{}", fulcrum.log());
}

/// `fulcrum check` shows a `shutdown_timeout` that is not the default, and nothing otherwise.
#[test]
fn check_shows_a_shutdown_timeout_that_is_not_the_default() {
    let dir = tempfile::tempdir().unwrap();
    for (top, shown) in [("shutdown_timeout = 0", Some("shutdown_timeout 0s")), ("", None)] {
        let path = dir.path().join("fulcrum.toml");
        std::fs::write(&path, config("127.0.0.1:9".parse().unwrap(), top)).unwrap();
        let (code, out, err) = fulcrum_cmd(&["check", "--config", path.to_str().unwrap()], None);
        assert_eq!(code, 0, "{out}{err}");
        match shown {
            Some(line) => assert!(out.lines().any(|l| l == line), "{out}"),
            None => assert!(!out.contains("shutdown_timeout"), "{out}"),
        }
    }
}
