//! What a hostile client or a broken member sends, byte for byte, and what Fulcrum does with it:
//! each test reads as "client sends X, member sees Y, client gets Z", over raw sockets where the
//! bytes matter.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::support::*;

/// Write `request` on a fresh connection and read until the server closes it (or `wait` passes).
fn exchange(addr: SocketAddr, request: &[u8], wait: Duration) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(wait)).unwrap();
    stream.write_all(request).expect("write");
    read_all(&mut stream)
}

fn read_all(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn status_of(response: &str) -> u16 {
    response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// A GET with `Connection: close`, for `exchange`.
fn get_raw(target: &str, host: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").into_bytes()
}

const EXCLUDING: &str = r#"
[[vhost]]
server_name = "www.example.com"
preserve_host = true
proxy_pass = [
    { path = "/balancer-manager", to = "!" },
    { path = "/server-status", to = "!" },
    { path = "/", to = "balancer://default/" },
]
"#;

fn excluding_config(members: &[&str], top: &str, balancer: &str) -> String {
    let mut c = format!("listen = [\"127.0.0.1:0\"]\n{top}\n{EXCLUDING}\n[balancer.default]\n{balancer}\n");
    for (i, url) in members.iter().enumerate() {
        c.push_str(&format!("\n[[balancer.default.member]]\nurl = \"{url}\"\nroute = \"web{}\"\n", i + 1));
    }
    c
}

/// Class 1: routing sees the canonical path (merged slashes, dot segments, unreserved escapes
/// decoded), and the member gets that same path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_spelling_of_an_excluded_path_is_excluded() {
    let (web1, _web2) = two_backends().await;
    let fulcrum = Fulcrum::start(&excluding_config(&[&web1.url()], "", ""));
    // (request target, status, what the member's request line shows)
    let cases: &[(&str, u16, Option<&str>)] = &[
        ("//balancer-manager", 404, None),
        ("///server-status", 404, None),
        ("//balancer-manager/x", 404, None),
        ("http://www.example.com//balancer-manager", 404, None),
        ("/./balancer-manager", 404, None),
        ("/x/../balancer-manager", 404, None),
        ("/%62alancer-manager", 404, None),
        ("/server-status/./", 404, None),
        ("/%2e/server-status", 404, None),
        ("/balancer-managerx", 200, Some("GET /balancer-managerx HTTP/1.1")),
        ("//a//b/../c", 200, Some("GET /a/c HTTP/1.1")),
        ("/a%20b%41?q=%41", 200, Some("GET /a%20bA?q=%41 HTTP/1.1")),
        ("http://www.example.com//x/./y", 200, Some("GET /x/y HTTP/1.1")),
        ("/a%2Fb", 404, None),
        ("/a/../../etc/passwd", 400, None),
        ("/%2e%2e/etc/passwd", 400, None),
        ("/a%zz", 400, None),
    ];
    let mut proxied = 0;
    for (target, status, member_saw) in cases {
        let response = exchange(fulcrum.addr, &get_raw(target, "www.example.com"), Duration::from_secs(10));
        assert_eq!(status_of(&response), *status, "client sends {target}: {response}");
        if let Some(line) = member_saw {
            proxied += 1;
            assert!(response.contains(&format!("request: {line}")), "{target}: member saw\n{response}");
        }
        assert_eq!(web1.served(), proxied, "{target}: what reached the member");
    }
}

/// A member that answers every request with `bytes`, then closes.
async fn replying_member(bytes: &'static [u8]) -> SocketAddr {
    raw_member(move |mut stream, _head| async move {
        use tokio::io::AsyncWriteExt;
        let _ = stream.write_all(bytes).await;
        let _ = stream.shutdown().await;
    })
    .await
}

/// Class 2: the framing of what Fulcrum relays is its own, derived from the body it relays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_members_framing_is_never_relayed_as_is() {
    // (member answers, client gets status, client gets body, content-length the client sees)
    let cases: &[(&[u8], u16, &str, Option<&str>)] = &[
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\nb\r\nhello world\r\n0\r\n\r\n",
            200,
            "hello world",
            None,
        ),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", 200, "hello", Some("5")),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 200, "hello", None),
        (b"HTTP/1.0 200 OK\r\n\r\nuntil close", 200, "until close", None),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nnot-gzip", 502, "Proxy Error", None),
    ];
    for (answer, status, body, length) in cases {
        let member = replying_member(answer).await;
        let fulcrum = Fulcrum::start(&excluding_config(&[&format!("http://{member}")], "", ""));
        let response = exchange(fulcrum.addr, &get_raw("/", "www.example.com"), Duration::from_secs(10));
        let shown = String::from_utf8_lossy(answer);
        assert_eq!(status_of(&response), *status, "member sends {shown:?}: {response}");
        assert!(response.contains(body), "member sends {shown:?}: {response}");
        let lengths: Vec<&str> = response
            .lines()
            .filter(|l| l.to_ascii_lowercase().starts_with("content-length:"))
            .map(|l| l[15..].trim())
            .collect();
        if *status == 200 {
            assert_eq!(lengths.first().copied(), *length, "member sends {shown:?}: {response}");
            assert!(lengths.len() <= 1, "one Content-Length at most: {response}");
        }
    }
}

/// Class 3: Host is validated as an authority and never reflected unescaped; an absolute-form
/// target's authority is the host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_are_validated_escaped_and_taken_from_absolute_targets() {
    let (web1, _web2) = two_backends().await;
    let fulcrum = Fulcrum::start(&excluding_config(&[&web1.url()], "", ""));
    for host in ["<script>alert(1)</script>", "a b/c@d", "user@www.example.com", "x:80:80", "ex\"ample"] {
        for target in ["/", "/balancer-manager", "/a%2Fb"] {
            let response = exchange(fulcrum.addr, &get_raw(target, host), Duration::from_secs(10));
            assert_eq!(status_of(&response), 400, "Host {host:?} {target}: {response}");
            assert!(!response.contains("<script>"), "reflected: {response}");
        }
    }
    assert_eq!(web1.served(), 0, "no bad Host reached the member");

    let response = exchange(
        fulcrum.addr,
        b"GET http://abs.example:9999/h?q=1 HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n",
        Duration::from_secs(10),
    );
    assert_eq!(status_of(&response), 200, "{response}");
    assert!(response.contains("request: GET /h?q=1 HTTP/1.1"), "{response}");
    assert!(response.contains("header: host: abs.example:9999"), "{response}");
    assert!(response.contains("header: x-forwarded-host: abs.example:9999"), "{response}");
}

/// Class 4: a broken request body is the client's fault: 400/408/413/501, the member is not
/// put in error, and the log says whose fault it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_faults_are_not_blamed_on_the_member() {
    let (web1, web2) = two_backends().await;
    let fulcrum = Fulcrum::start(&excluding_config(
        &[&web1.url(), &web2.url()],
        "[limits]\nbody_timeout = 1\nrequest_body = 100000",
        "",
    ));
    let post = |body: &str| {
        format!("POST /upload HTTP/1.1\r\nHost: www.example.com\r\nTransfer-Encoding: chunked\r\n\r\n{body}")
            .into_bytes()
    };
    // (what the client sends, whether it then stops sending, the status it gets)
    let cases: Vec<(&str, Vec<u8>, bool, u16)> = vec![
        ("a bad chunk size", post("zz\r\nhello\r\n0\r\n\r\n"), false, 400),
        ("a chunk size past 64 bits", post("1FFFFFFFFFFFFFFFFF\r\nhello\r\n"), false, 400),
        ("a huge chunk size, then nothing", post("FFFFFFFFFFFFFFF\r\nhello"), false, 408),
        ("an abort mid-body", post("a\r\nhel"), true, 400),
        (
            "Expect: 100-continue, then no body",
            b"POST /upload HTTP/1.1\r\nHost: www.example.com\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n"
                .to_vec(),
            true,
            400,
        ),
        (
            "a body past limits.request_body, chunked",
            post(&format!("{:x}\r\n{}\r\n0\r\n\r\n", 100_001, "x".repeat(100_001))),
            false,
            413,
        ),
        (
            "a body past limits.request_body, announced",
            b"POST /upload HTTP/1.1\r\nHost: www.example.com\r\nContent-Length: 100001\r\n\r\n".to_vec(),
            false,
            413,
        ),
        (
            "Transfer-Encoding: gzip, chunked",
            b"POST /upload HTTP/1.1\r\nHost: www.example.com\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"
                .to_vec(),
            false,
            501,
        ),
    ];
    for (what, bytes, stop, status) in cases {
        let mut stream = TcpStream::connect(fulcrum.addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream.write_all(&bytes).unwrap();
        if stop {
            stream.shutdown(std::net::Shutdown::Write).unwrap();
        }
        let response = read_all(&mut stream);
        let got = response.lines().find(|l| l.starts_with("HTTP/1.1 ") && !l.contains(" 100 ")).map(status_of);
        // A client that went away may not get its answer; if it does, it is its 400.
        if !(stop && got.is_none()) {
            assert_eq!(got, Some(status), "client sends {what}: {response}");
        }
    }
    let log = fulcrum.log();
    assert!(!log.contains("member failed"), "a client fault was blamed on a member:\n{log}");
    assert!(log.contains("client fault"), "the log says whose fault it was:\n{log}");
    // Both members still in rotation: nothing was put in error.
    let client = client();
    let mut seen = Vec::new();
    for _ in 0..2 {
        seen.push(get(&client, &fulcrum.url("/"), &[]).await.served_by().to_string());
    }
    seen.sort();
    assert_eq!(seen, ["web1", "web2"]);
}

/// Class 5: a client that trickles its body is cut off (mod_reqtimeout's body timeout with its
/// minimum rate), and the member connection it held is let go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_body_times_out() {
    let (web1, _web2) = two_backends().await;
    let fulcrum =
        Fulcrum::start(&excluding_config(&[&web1.url()], "[limits]\nbody_timeout = 2\nbody_min_rate = 500", ""));
    let _ = &web1;
    let mut stream = TcpStream::connect(fulcrum.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    stream.write_all(b"POST /upload HTTP/1.1\r\nHost: www.example.com\r\nContent-Length: 1000\r\n\r\n").unwrap();
    let started = Instant::now();
    let mut response = String::new();
    // One byte every 300 ms: 3 bytes/s, far under the minimum rate.
    while started.elapsed() < Duration::from_secs(20) && response.is_empty() {
        if stream.write_all(b"x").is_err() {
            break;
        }
        let mut buf = [0u8; 4096];
        if let Ok(n) = stream.read(&mut buf) {
            response.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
    assert_eq!(status_of(&response), 408, "after {:?}: {response}", started.elapsed());
    let log = fulcrum.log();
    assert!(log.contains("too slowly") && log.contains("the member is not blamed"), "{log}");
    // The member is still in rotation (not in error), and answers the next request.
    let next = get(&client(), &fulcrum.url("/"), &[]).await;
    assert_eq!(next.served_by(), "web1");
}

/// Class 5: mod_reqtimeout's header timeout. A client that sends half a request head and stops
/// is disconnected after `[limits] header_timeout` (without a 408: see the README's differences);
/// so is a keep-alive connection that starts no next request; one whose requests come in time is
/// served, its connection kept, however long it lives in all (the timer is moved forward per
/// request, and reused from connection to connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_that_does_not_come_in_time_closes_the_connection() {
    let (web1, _web2) = two_backends().await;
    let fulcrum = Fulcrum::start(&excluding_config(&[&web1.url()], "[limits]\nheader_timeout = 1", ""));
    let _ = &web1;
    let request = b"GET / HTTP/1.1\r\nHost: www.example.com\r\n\r\n";
    let closed_within = |stream: &mut TcpStream, limit: Duration| {
        stream.set_read_timeout(Some(limit)).unwrap();
        let started = Instant::now();
        let mut buf = [0u8; 4096];
        let read = stream.read(&mut buf);
        (
            matches!(read, Ok(0)) || read.as_ref().is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
            started.elapsed(),
        )
    };

    // Half a head, then nothing: closed after about a second, nothing written.
    let mut half = TcpStream::connect(fulcrum.addr).unwrap();
    half.write_all(b"GET / HTTP/1.1\r\nHost: www.exa").unwrap();
    let (closed, after) = closed_within(&mut half, Duration::from_secs(10));
    assert!(closed && after >= Duration::from_millis(900), "half a head: closed {closed} after {after:?}");

    // Requests every 400 ms for 3 s on one connection: each answered, the connection kept.
    let mut kept = TcpStream::connect(fulcrum.addr).unwrap();
    kept.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = Instant::now();
    let mut answered = 0;
    while started.elapsed() < Duration::from_secs(3) {
        kept.write_all(request).unwrap();
        let mut buf = [0u8; 4096];
        let n = kept.read(&mut buf).unwrap();
        assert_eq!(status_of(&String::from_utf8_lossy(&buf[..n])), 200, "request {answered}");
        answered += 1;
        std::thread::sleep(Duration::from_millis(400));
    }
    assert!(answered >= 7, "{answered} requests in 3 s");
    // Then idle: closed after the timeout, counted from its last response.
    let (closed, after) = closed_within(&mut kept, Duration::from_secs(10));
    assert!(closed && after >= Duration::from_millis(500), "idle keep-alive: closed {closed} after {after:?}");
}

/// Class 5 and 9: Apache's request limits, with Apache's statuses at the same sizes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_limits_answer_as_apache_does() {
    let (web1, _web2) = two_backends().await;
    let fulcrum = Fulcrum::start(&excluding_config(&[&web1.url()], "", ""));
    let line = |len: usize| {
        // `GET /xxx HTTP/1.1` of `len` bytes.
        let target = format!("/{}", "x".repeat(len - "GET / HTTP/1.1".len()));
        format!("GET {target} HTTP/1.1\r\nHost: www.example.com\r\nConnection: close\r\n\r\n")
    };
    let field = |len: usize| {
        let value = "v".repeat(len - "X-Big: ".len());
        format!("GET / HTTP/1.1\r\nHost: www.example.com\r\nX-Big: {value}\r\nConnection: close\r\n\r\n")
    };
    let fields = |n: usize| {
        let mut r = String::from("GET / HTTP/1.1\r\nHost: www.example.com\r\nConnection: close\r\n");
        for i in 0..n - 2 {
            r.push_str(&format!("X-F{i}: {i}\r\n"));
        }
        r + "\r\n"
    };
    let cases = [
        ("request line of 8190 bytes", line(8190), 200),
        ("request line of 8191 bytes", line(8191), 200),
        ("request line of 8192 bytes", line(8192), 414),
        ("request line of 10000 bytes", line(10000), 414),
        ("header line of 8191 bytes", field(8191), 200),
        ("header line of 8192 bytes", field(8192), 400),
        ("header value of 20000 bytes", field(20000), 400),
        ("100 header fields", fields(100), 200),
        ("101 header fields", fields(101), 400),
    ];
    for (what, request, status) in cases {
        let response = exchange(fulcrum.addr, request.as_bytes(), Duration::from_secs(10));
        assert_eq!(status_of(&response), status, "client sends a {what}: {}", &response[..response.len().min(300)]);
    }
}

/// Class 5: past `max_connections`, new connections wait until one closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_wait_for_a_free_slot() {
    let (web1, _web2) = two_backends().await;
    let fulcrum = Fulcrum::start(&excluding_config(&[&web1.url()], "[limits]\nmax_connections = 2", ""));
    let idle1 = TcpStream::connect(fulcrum.addr).unwrap();
    let _idle2 = TcpStream::connect(fulcrum.addr).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let mut third = TcpStream::connect(fulcrum.addr).unwrap();
    third.write_all(&get_raw("/", "www.example.com")).unwrap();
    third.set_read_timeout(Some(Duration::from_millis(700))).unwrap();
    let mut buf = [0u8; 64];
    assert!(third.read(&mut buf).is_err(), "a third connection is not served while two are open");
    drop(idle1);
    third.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let response = read_all(&mut third);
    assert_eq!(status_of(&response), 200, "served once a slot is free: {response}");
    assert!(fulcrum.log().contains("max_connections"), "{}", fulcrum.log());
}

/// Class 9: Fulcrum's 502 says `Proxy Error` in its status line, as Apache's does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_timeout_is_a_502_proxy_error() {
    let (web1, _web2) = two_backends().await;
    let fulcrum = Fulcrum::start(&excluding_config(&[&web1.url()], "", "timeout = 1"));
    let response = exchange(fulcrum.addr, &get_raw("/sleep/3000", "www.example.com"), Duration::from_secs(10));
    assert!(response.starts_with("HTTP/1.1 502 Proxy Error\r\n"), "{response}");
}

/// Class 8: a member's `traffic` (bytraffic's measure, the manager's To/From) is the bytes sent
/// to it plus the bytes read from it, bodies both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_counts_request_and_response_bodies() {
    let (web1, _web2) = two_backends().await;
    let admin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let admin_addr = admin.local_addr().unwrap();
    drop(admin);
    let fulcrum = Fulcrum::start(&excluding_config(&[&web1.url()], &format!("admin_listen = \"{admin_addr}\""), ""));
    let upload = "u".repeat(100_000);
    let request = format!(
        "POST /upload HTTP/1.1\r\nHost: www.example.com\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{upload}",
        upload.len()
    );
    let response = exchange(fulcrum.addr, request.as_bytes(), Duration::from_secs(10));
    assert_eq!(status_of(&response), 200, "{response}");
    let body_len = response.split_once("\r\n\r\n").map_or(0, |(_, body)| body.len()) as u64;
    let metrics = get(&client(), &format!("http://{admin_addr}/metrics"), &[]).await;
    let traffic: u64 = metrics
        .body
        .lines()
        .find(|l| l.starts_with("fulcrum_member_traffic_bytes_total") && l.contains(&web1.url()))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no traffic line in\n{}", metrics.body));
    assert_eq!(traffic, upload.len() as u64 + body_len, "100,000 bytes sent plus {body_len} read");
}
