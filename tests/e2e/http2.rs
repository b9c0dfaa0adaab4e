//! HTTP/2 from clients (issue 13, must-show 3): Debian's `nghttp` and `h2load` against the TLS and
//! h2c listeners; the RFC 9113 rules a proxy must get right, sent as raw frames where no client
//! would send them (connection-specific fields, pseudo-header rules, the stream limit, GOAWAY on
//! graceful shutdown); and, with the `h2` crate as the client, what the member sees of an HTTP/2
//! request and what the client gets back.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use crate::certs::TestCa;
use crate::support::*;
use crate::tls::{curl, guide_with_listen, tls_entry};

/// The guide's set-up with a plain, an h2c and a TLS listener: (process, [plain, h2c, tls] URLs).
fn three_listeners(web1: &EchoServer, web2: &EchoServer, ca: &TestCa) -> (Fulcrum, Vec<String>) {
    let listen = format!("[\"127.0.0.1:0\", {{ address = \"127.0.0.1:0\", h2c = true }}, {}]", tls_entry(ca, "www"));
    let fulcrum = Fulcrum::start(&guide_with_listen(web1, web2, &listen));
    let urls = fulcrum.listeners(3);
    (fulcrum, urls)
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("{cmd}: {e} (tests/run installs it)"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{cmd} {args:?}:\n{text}");
    text
}

/// nghttp (verbose, so the frames are shown) and h2load against the TLS listener (h2 by ALPN) and
/// the h2c listener (prior knowledge); curl too; the h2c listener still speaks HTTP/1.1. Every
/// request is balanced as byrequests does it: the two members share them exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_nghttp_h2load_and_curl_against_tls_and_h2c() {
    let (web1, web2) = two_backends().await;
    let certs = tempfile::tempdir().unwrap();
    let ca = TestCa::new(certs.path());
    ca.issue("www.example.com", "www");
    let (_fulcrum, urls) = three_listeners(&web1, &web2, &ca);
    let (h2c, tls) = (format!("{}/", urls[1]), format!("{}/", urls[2]));
    for url in [&tls, &h2c] {
        let text = run("nghttp", &["-v", "-H", ":authority: www.example.com", url]);
        assert!(text.lines().any(|l| l.contains("recv (stream_id=") && l.ends_with(") :status: 200")), "{text}");
        assert!(text.contains("served-by: web"), "{text}");
        assert!(text.contains("recv SETTINGS frame"), "{text}");
        assert!(text.contains("[SETTINGS_MAX_CONCURRENT_STREAMS(0x03):100]"), "{text}");
        if url == &tls {
            assert!(text.contains("The negotiated protocol: h2"), "{text}");
        }
        let text = run("h2load", &["-n", "200", "-c", "4", "-m", "10", "-H", ":authority: www.example.com", url]);
        assert!(text.contains("200 succeeded, 0 failed, 0 errored"), "{text}");
        assert!(text.contains("status codes: 200 2xx"), "{text}");
    }
    assert_eq!(web1.served() + web2.served(), 402);
    assert_eq!(web1.served(), web2.served(), "byrequests shares them exactly");

    let answer = curl(&["--http2-prior-knowledge", "-H", "Host: www.example.com", &h2c]);
    assert_eq!((answer.version.as_str(), answer.status), ("HTTP/2", 200));
    let answer = curl(&["--http1.1", "-H", "Host: www.example.com", &h2c]);
    assert_eq!((answer.version.as_str(), answer.status), ("HTTP/1.1", 200));
    // The plain listener is HTTP/1.1 only: prior knowledge gets no HTTP/2 there.
    let out =
        Command::new("curl").args(["-s", "--max-time", "10", "--http2-prior-knowledge", &urls[0]]).output().unwrap();
    assert!(!out.status.success(), "HTTP/2 on a plain listener: {}", String::from_utf8_lossy(&out.stdout));
}

/// A raw HTTP/2 client: frames written and read by hand, HPACK literals without Huffman, so that
/// it can send what RFC 9113 forbids.
struct Raw {
    stream: TcpStream,
}

#[derive(Debug)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const WINDOW_UPDATE: u8 = 8;
const END_STREAM: u8 = 1;
const END_HEADERS: u8 = 4;
const PROTOCOL_ERROR: u32 = 1;
const REFUSED_STREAM: u32 = 7;

impl Raw {
    /// Connect to an h2c listener and send the preface and empty SETTINGS.
    fn connect(url: &str) -> Raw {
        Raw::connect_with(url, &[])
    }

    /// Connect to an h2c listener and send the preface and these SETTINGS (identifier, value).
    fn connect_with(url: &str, settings: &[(u16, u32)]) -> Raw {
        let addr = url.trim_start_matches("http://").trim_end_matches('/');
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let mut raw = Raw { stream };
        raw.stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
        let payload: Vec<u8> =
            settings.iter().flat_map(|(id, v)| [&id.to_be_bytes()[..], &v.to_be_bytes()].concat()).collect();
        raw.send(SETTINGS, 0, 0, &payload);
        raw
    }

    fn send(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        let len = payload.len() as u32;
        let mut frame = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        frame.extend_from_slice(&stream.to_be_bytes());
        frame.extend_from_slice(payload);
        self.stream.write_all(&frame).unwrap();
    }

    /// A HEADERS frame of `fields`, each a literal without indexing and a new name (RFC 7541 §6.2.2).
    fn headers(&mut self, stream: u32, fields: &[(&str, &str)], end_stream: bool) {
        let mut block = Vec::new();
        for (name, value) in fields {
            block.push(0);
            for s in [name, value] {
                let mut len = s.len();
                if len < 127 {
                    block.push(len as u8);
                } else {
                    block.push(127);
                    len -= 127;
                    while len >= 128 {
                        block.push((len % 128 + 128) as u8);
                        len /= 128;
                    }
                    block.push(len as u8);
                }
                block.extend_from_slice(s.as_bytes());
            }
        }
        self.send(HEADERS, END_HEADERS | if end_stream { END_STREAM } else { 0 }, stream, &block);
    }

    /// The next frame; SETTINGS and PING are acknowledged on the way (and returned). `None` at the
    /// end of the connection.
    fn next(&mut self) -> Option<Frame> {
        let mut head = [0u8; 9];
        self.stream.read_exact(&mut head).ok()?;
        let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
        let mut payload = vec![0; len];
        self.stream.read_exact(&mut payload).ok()?;
        let frame = Frame {
            kind: head[3],
            flags: head[4],
            stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
            payload,
        };
        if frame.kind == SETTINGS && frame.flags & 1 == 0 {
            self.send(SETTINGS, 1, 0, &[]);
        }
        if frame.kind == PING && frame.flags & 1 == 0 {
            let payload = frame.payload.clone();
            self.send(PING, 1, 0, &payload);
        }
        Some(frame)
    }

    /// Frames until one about `stream` (HEADERS or RST_STREAM) or a GOAWAY.
    fn answer(&mut self, stream: u32) -> Frame {
        loop {
            let frame = self.next().expect("the connection ended without an answer");
            if (frame.stream == stream && (frame.kind == HEADERS || frame.kind == RST_STREAM)) || frame.kind == GOAWAY {
                return frame;
            }
        }
    }
}

fn error_code(frame: &Frame) -> u32 {
    let at = if frame.kind == GOAWAY { 4 } else { 0 };
    u32::from_be_bytes(frame.payload[at..at + 4].try_into().unwrap())
}

/// How the server answered a request's HEADERS.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// A response HEADERS whose first field is `:status: 200` (HPACK static index 8).
    Ok200,
    /// RST_STREAM with this error code: a stream error, the connection goes on.
    Reset(u32),
    /// GOAWAY with this error code: a connection error.
    GoAway(u32),
}

/// RFC 9113 §8.2.2, §8.3, §8.1.1: requests a proxy must refuse as malformed (a stream error of
/// type PROTOCOL_ERROR) and never forward; the well-formed ones beside them are answered. Each row
/// on a connection of its own, after which the connection still serves a request (stream
/// errors, not connection errors).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_malformed_requests_are_stream_errors_never_forwarded() {
    let (web1, web2) = two_backends().await;
    let certs = tempfile::tempdir().unwrap();
    let ca = TestCa::new(certs.path());
    ca.issue("www.example.com", "www");
    let (_fulcrum, urls) = three_listeners(&web1, &web2, &ca);
    let base = [(":method", "GET"), (":scheme", "http"), (":authority", "www.example.com"), (":path", "/")];
    let with = |extra: &[(&'static str, &'static str)]| [&base[..], extra].concat();
    let without = |name: &str| base.iter().filter(|(n, _)| *n != name).copied().collect::<Vec<_>>();
    // (what the client sends, its fields, how the server answers; forwarded only when answered)
    type Fields = Vec<(&'static str, &'static str)>;
    let rows: Vec<(&str, Fields, Outcome)> = vec![
        ("a well-formed GET", base.to_vec(), Outcome::Ok200),
        ("connection: keep-alive", with(&[("connection", "keep-alive")]), Outcome::Reset(PROTOCOL_ERROR)),
        ("transfer-encoding: chunked", with(&[("transfer-encoding", "chunked")]), Outcome::Reset(PROTOCOL_ERROR)),
        ("keep-alive", with(&[("keep-alive", "timeout=5")]), Outcome::Reset(PROTOCOL_ERROR)),
        ("upgrade", with(&[("upgrade", "websocket")]), Outcome::Reset(PROTOCOL_ERROR)),
        ("proxy-connection", with(&[("proxy-connection", "keep-alive")]), Outcome::Reset(PROTOCOL_ERROR)),
        ("te: gzip", with(&[("te", "gzip")]), Outcome::Reset(PROTOCOL_ERROR)),
        ("te: trailers (allowed)", with(&[("te", "trailers")]), Outcome::Ok200),
        ("no :path", without(":path"), Outcome::Reset(PROTOCOL_ERROR)),
        ("no :method", without(":method"), Outcome::Reset(PROTOCOL_ERROR)),
        ("no :scheme", without(":scheme"), Outcome::Reset(PROTOCOL_ERROR)),
        ("two :path", with(&[(":path", "/again")]), Outcome::Reset(PROTOCOL_ERROR)),
        // RFC 9113 §8.1.1 asks for a stream error; the h2 crate ends the whole connection
        // (GOAWAY PROTOCOL_ERROR) for these two: stricter, and still never forwarded.
        ("an unknown pseudo-header", with(&[(":foo", "bar")]), Outcome::GoAway(PROTOCOL_ERROR)),
        ("a response pseudo-header", with(&[(":status", "200")]), Outcome::Reset(PROTOCOL_ERROR)),
        (
            "a pseudo-header after a field",
            vec![(":method", "GET"), (":scheme", "http"), ("accept", "*/*"), (":authority", "a"), (":path", "/")],
            Outcome::Reset(PROTOCOL_ERROR),
        ),
        ("an upper-case field name", with(&[("X-Upper", "1")]), Outcome::GoAway(PROTOCOL_ERROR)),
    ];
    let mut seen = Vec::new();
    for (what, fields, expected) in &rows {
        let before = web1.served() + web2.served();
        let mut raw = Raw::connect(&urls[1]);
        raw.headers(1, fields, true);
        let frame = raw.answer(1);
        let outcome = match frame.kind {
            HEADERS => {
                assert_eq!(frame.payload.first(), Some(&0x88), "{what}: not :status 200: {frame:?}");
                Outcome::Ok200
            }
            RST_STREAM => Outcome::Reset(error_code(&frame)),
            _ => Outcome::GoAway(error_code(&frame)),
        };
        let forwarded = web1.served() + web2.served() - before;
        assert_eq!(forwarded, u64::from(*expected == Outcome::Ok200), "{what}: forwarded to a member?");
        if !matches!(outcome, Outcome::GoAway(_)) {
            // A stream error: the connection goes on.
            raw.headers(3, &base, true);
            let frame = raw.answer(3);
            assert_eq!((frame.kind, frame.payload.first()), (HEADERS, Some(&0x88)), "{what}: after it, {frame:?}");
        }
        seen.push((*what, outcome));
    }
    let expected: Vec<(&str, Outcome)> = rows.into_iter().map(|(what, _, outcome)| (what, outcome)).collect();
    assert_eq!(seen, expected);
}

/// A member that answers after `delay`; counts the requests it got.
async fn slow_member(delay: Duration, got: std::sync::Arc<std::sync::atomic::AtomicUsize>) -> std::net::SocketAddr {
    raw_member(move |mut stream, _head| {
        let got = std::sync::Arc::clone(&got);
        async move {
            use tokio::io::AsyncWriteExt;
            got.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(delay).await;
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nslow").await;
        }
    })
    .await
}

fn h2c_config(member: std::net::SocketAddr, top: &str) -> String {
    format!(
        "listen = [{{ address = \"127.0.0.1:0\", h2c = true }}]\n{top}\n[[vhost]]\nserver_name = \"www.example.com\"\n\
         proxy_pass = [{{ path = \"/\", to = \"balancer://b/\" }}]\n[balancer.b]\n[[balancer.b.member]]\n\
         url = \"http://{member}\"\n"
    )
}

/// RFC 9113 §5.1.2: the server announces SETTINGS_MAX_CONCURRENT_STREAMS = 100, and a stream
/// opened past it is refused (RST_STREAM REFUSED_STREAM, safe for the client to retry) while the
/// 100 in flight are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_streams_beyond_the_limit_are_refused() {
    let got = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let member = slow_member(Duration::from_secs(2), std::sync::Arc::clone(&got)).await;
    let fulcrum = Fulcrum::start(&h2c_config(member, ""));
    let mut raw = Raw::connect(&fulcrum.url("/"));
    let settings = raw.next().unwrap();
    assert_eq!(settings.kind, SETTINGS);
    let entries: Vec<(u16, u32)> = settings
        .payload
        .chunks(6)
        .map(|c| (u16::from_be_bytes([c[0], c[1]]), u32::from_be_bytes([c[2], c[3], c[4], c[5]])))
        .collect();
    assert!(entries.contains(&(3, 100)), "MAX_CONCURRENT_STREAMS: {entries:?}");
    let fields = [(":method", "GET"), (":scheme", "http"), (":authority", "www.example.com"), (":path", "/")];
    // Wait for the server's acknowledgement of our SETTINGS, so that its own are in force.
    while raw.next().is_some_and(|f| !(f.kind == SETTINGS && f.flags & 1 == 1)) {}
    for i in 0..101u32 {
        raw.headers(2 * i + 1, &fields, true);
    }
    let (mut reset, mut answered) = (Vec::new(), 0);
    while answered + reset.len() < 101 {
        let frame = raw.next().expect("the connection ended");
        match frame.kind {
            RST_STREAM => reset.push((frame.stream, error_code(&frame))),
            HEADERS => answered += 1,
            GOAWAY => panic!("GOAWAY: {frame:?}"),
            _ => {}
        }
    }
    assert_eq!(reset, [(201, REFUSED_STREAM)]);
    assert_eq!(answered, 100);
    assert_eq!(got.load(std::sync::atomic::Ordering::SeqCst), 100, "the refused stream reached no member");
}

/// Graceful shutdown (SIGTERM) over HTTP/2: the client gets a GOAWAY (NO_ERROR), the stream in
/// flight still gets its whole response, then the connection closes and Fulcrum exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_graceful_shutdown_sends_goaway_and_finishes_the_stream() {
    let got = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let member = slow_member(Duration::from_millis(1500), std::sync::Arc::clone(&got)).await;
    let mut fulcrum = Fulcrum::start(&h2c_config(member, "shutdown_timeout = 10"));
    let mut raw = Raw::connect(&fulcrum.url("/"));
    let fields = [(":method", "GET"), (":scheme", "http"), (":authority", "www.example.com"), (":path", "/")];
    raw.headers(1, &fields, true);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while got.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(std::time::Instant::now() < deadline, "the request never reached the member");
        std::thread::sleep(Duration::from_millis(10));
    }
    fulcrum.signal("TERM");
    let mut frames = Vec::new();
    while let Some(frame) = raw.next() {
        frames.push(frame);
    }
    let kinds: Vec<(u8, u32)> = frames.iter().filter(|f| f.kind != SETTINGS).map(|f| (f.kind, f.stream)).collect();
    let goaway = frames.iter().find(|f| f.kind == GOAWAY).unwrap_or_else(|| panic!("no GOAWAY: {kinds:?}"));
    assert_eq!(error_code(goaway), 0, "NO_ERROR");
    let response = frames.iter().position(|f| f.kind == HEADERS && f.stream == 1).expect("no response");
    assert!(frames.iter().position(|f| f.kind == GOAWAY).unwrap() < response, "GOAWAY first: {kinds:?}");
    assert_eq!(frames[response].payload.first(), Some(&0x88));
    let body: Vec<u8> =
        frames.iter().filter(|f| f.kind == DATA && f.stream == 1).flat_map(|f| f.payload.clone()).collect();
    assert_eq!(body, b"slow");
    assert!(frames.iter().any(|f| f.kind == DATA && f.stream == 1 && f.flags & END_STREAM == 1), "{kinds:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = fulcrum.exited() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "still running");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    assert!(fulcrum.log().contains("shut down: every connection finished"), "{}", fulcrum.log());
}

/// What the member sees of an HTTP/2 request, and what the client gets: sent with the `h2` crate
/// over the h2c listener, through the guide's rules.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_requests_reach_members_as_http11() {
    let (web1, web2) = two_backends().await;
    let certs = tempfile::tempdir().unwrap();
    let ca = TestCa::new(certs.path());
    ca.issue("www.example.com", "www");
    let (_fulcrum, urls) = three_listeners(&web1, &web2, &ca);
    let tcp = tokio::net::TcpStream::connect(urls[1].trim_start_matches("http://")).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();

    struct Row {
        what: &'static str,
        method: &'static str,
        path: &'static str,
        headers: &'static [(&'static str, &'static str)],
        body: &'static [&'static str],
        /// Lines the member's echo must show, and lines it must not.
        seen: &'static [&'static str],
        unseen: &'static [&'static str],
        /// The member a sticky route sends it to (none: byrequests chooses, and Set-Cookie
        /// names the one it chose).
        sticky: Option<&'static str>,
    }
    let rows = [
        Row {
            what: "a GET without a body: no framing header, the guide's headers",
            method: "GET",
            path: "/a?b=1",
            headers: &[],
            body: &[],
            seen: &[
                "request: GET /a?b=1 HTTP/1.1",
                "header: host: www.example.com",
                "header: x-forwarded-for: 127.0.0.1, 127.0.0.1",
                "header: x-forwarded-host: www.example.com",
                "body-bytes: 0",
            ],
            unseen: &["header: transfer-encoding", "header: content-length", "header: x-forwarded-proto"],
            sticky: None,
        },
        Row {
            what: "cookies in separate fields (RFC 9113 §8.2.3) are one Cookie line, and stickiness reads it",
            method: "GET",
            path: "/",
            headers: &[("cookie", "a=1"), ("cookie", "BALANCEID=balancer.web1"), ("cookie", "c=3")],
            body: &[],
            seen: &["header: cookie: a=1; BALANCEID=balancer.web1; c=3"],
            unseen: &[],
            sticky: Some("web1"),
        },
        Row {
            what: "te: trailers is hop-by-hop",
            method: "GET",
            path: "/",
            headers: &[("te", "trailers")],
            body: &[],
            seen: &[],
            unseen: &["header: te"],
            sticky: None,
        },
        Row {
            what: "a body with content-length goes with it",
            method: "POST",
            path: "/post",
            headers: &[("content-length", "11")],
            body: &["hello", " world"],
            seen: &["request: POST /post HTTP/1.1", "header: content-length: 11", "body-bytes: 11"],
            unseen: &["header: transfer-encoding"],
            sticky: None,
        },
        Row {
            what: "a body without content-length is chunked to the member",
            method: "POST",
            path: "/post",
            headers: &[],
            body: &["hello", " world"],
            seen: &["header: transfer-encoding: chunked", "body-bytes: 11"],
            unseen: &["header: content-length"],
            sticky: None,
        },
    ];
    for row in rows {
        let mut request = hyper::Request::builder()
            .method(row.method)
            .uri(format!("http://www.example.com{}", row.path))
            .version(hyper::Version::HTTP_2);
        for (k, v) in row.headers {
            request = request.header(*k, *v);
        }
        let (response, mut send) = client.send_request(request.body(()).unwrap(), row.body.is_empty()).unwrap();
        for (i, chunk) in row.body.iter().enumerate() {
            send.send_data(bytes::Bytes::from_static(chunk.as_bytes()), i + 1 == row.body.len()).unwrap();
        }
        let response = response.await.unwrap();
        assert_eq!(response.status(), 200, "{}", row.what);
        let set_cookie = response.headers().get("set-cookie").map(|v| v.to_str().unwrap().to_string());
        let mut body = response.into_body();
        let mut text = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.unwrap();
            let _ = body.flow_control().release_capacity(chunk.len());
            text.extend_from_slice(&chunk);
        }
        let text = String::from_utf8_lossy(&text);
        let served_by = text.lines().find_map(|l| l.strip_prefix("served-by: ")).unwrap_or_default().to_string();
        match row.sticky {
            Some(member) => {
                assert_eq!(served_by, member, "{}", row.what);
                assert_eq!(set_cookie, None, "{}", row.what);
            }
            None => {
                assert!(served_by == "web1" || served_by == "web2", "{}: {text}", row.what);
                assert_eq!(set_cookie, Some(format!("BALANCEID=balancer.{served_by}; path=/;")), "{}", row.what);
            }
        }
        for line in row.seen {
            assert!(text.lines().any(|l| l == *line), "{}: `{line}` not in\n{text}", row.what);
        }
        for prefix in row.unseen {
            assert!(!text.lines().any(|l| l.starts_with(prefix)), "{}: `{prefix}` in\n{text}", row.what);
        }
    }
}

/// A member's HTTP/1-only response fields (Connection and the fields it names, Keep-Alive,
/// Transfer-Encoding, Upgrade, Proxy-Connection) never reach an HTTP/2 client (RFC 9113 §8.2.2);
/// the body does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_member_connection_fields_are_not_relayed() {
    let member = raw_member(|mut stream, _head| async move {
        use tokio::io::AsyncWriteExt;
        let _ = stream
            .write_all(
                b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\nX-Hop: 1\r\n\
                  Proxy-Connection: keep-alive\r\nX-End: 1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            )
            .await;
    })
    .await;
    let fulcrum = Fulcrum::start(&h2c_config(member, ""));
    let answer = curl(&["--http2-prior-knowledge", "-H", "Host: www.example.com", &fulcrum.url("/")]);
    assert_eq!((answer.version.as_str(), answer.status), ("HTTP/2", 200));
    assert_eq!(answer.body, "hello");
    assert_eq!(answer.values("x-end"), ["1"]);
    for name in ["connection", "keep-alive", "x-hop", "proxy-connection", "transfer-encoding", "upgrade"] {
        assert!(answer.values(name).is_empty(), "{name} relayed: {answer:?}");
    }
}

/// An HTTP/2 connection that starts no request for `[limits] header_timeout` is closed with a
/// GOAWAY (NO_ERROR), as an idle HTTP/1.1 keep-alive connection is closed; one that keeps
/// sending requests is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_idle_connections_get_goaway_after_the_header_timeout() {
    let (web1, _web2) = two_backends().await;
    let member: std::net::SocketAddr = web1.addr;
    let fulcrum = Fulcrum::start(&h2c_config(member, "[limits]\nheader_timeout = 1"));
    let fields = [(":method", "GET"), (":scheme", "http"), (":authority", "www.example.com"), (":path", "/")];
    // Busy for 3 s (a request every 300 ms): never closed.
    let mut busy = Raw::connect(&fulcrum.url("/"));
    for i in 0..10u32 {
        busy.headers(2 * i + 1, &fields, true);
        let frame = busy.answer(2 * i + 1);
        assert_eq!(frame.kind, HEADERS, "request {i}: {frame:?}");
        std::thread::sleep(Duration::from_millis(300));
    }
    // Then idle: GOAWAY and the end of the connection, within twice the timeout.
    let started = std::time::Instant::now();
    let goaway = loop {
        let frame = busy.next().expect("closed without GOAWAY");
        if frame.kind == GOAWAY {
            break frame;
        }
    };
    assert_eq!(error_code(&goaway), 0);
    while busy.next().is_some() {}
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    // A connection that never sends a request is closed the same way.
    let mut idle = Raw::connect(&fulcrum.url("/"));
    let frames: Vec<u8> = std::iter::from_fn(|| idle.next()).map(|f| f.kind).collect();
    assert!(frames.contains(&GOAWAY), "{frames:?}");
}

/// Flow control (RFC 9113 §5.2, §6.9) both ways. Fulcrum's own windows are announced as
/// documented (256 KiB per stream in SETTINGS, the connection's raised to 1 MiB by a
/// WINDOW_UPDATE). And it keeps to the client's: with a stream window of 1,000 bytes, a
/// 100,000-byte response sends exactly 1,000 bytes and waits; the client's WINDOW_UPDATEs bring
/// the rest, whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_flow_control_follows_the_windows() {
    const SIZE: usize = 100_000;
    let member = raw_member(|mut stream, _head| async move {
        use tokio::io::AsyncWriteExt;
        let mut answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {SIZE}\r\n\r\n").into_bytes();
        answer.extend(std::iter::repeat_n(b'x', SIZE));
        let _ = stream.write_all(&answer).await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    })
    .await;
    let fulcrum = Fulcrum::start(&h2c_config(member, ""));
    let mut raw = Raw::connect_with(&fulcrum.url("/"), &[(4, 1000)]);
    let fields = [(":method", "GET"), (":scheme", "http"), (":authority", "www.example.com"), (":path", "/")];
    raw.headers(1, &fields, true);
    let (mut settings, mut connection_update, mut received) = (None, None, 0usize);
    while received < 1000 {
        let frame = raw.next().expect("the connection ended");
        match frame.kind {
            SETTINGS if frame.flags & 1 == 0 => settings = Some(frame.payload.clone()),
            WINDOW_UPDATE if frame.stream == 0 => {
                connection_update = Some(u32::from_be_bytes(frame.payload[..4].try_into().unwrap()));
            }
            DATA if frame.stream == 1 => received += frame.payload.len(),
            RST_STREAM | GOAWAY => panic!("{frame:?}"),
            _ => {}
        }
    }
    let settings: Vec<(u16, u32)> = settings
        .expect("the server's SETTINGS")
        .chunks(6)
        .map(|c| (u16::from_be_bytes([c[0], c[1]]), u32::from_be_bytes([c[2], c[3], c[4], c[5]])))
        .collect();
    assert!(settings.contains(&(4, 256 * 1024)), "INITIAL_WINDOW_SIZE: {settings:?}");
    assert!(settings.contains(&(6, 64 * 1024)), "MAX_HEADER_LIST_SIZE: {settings:?}");
    assert_eq!(connection_update, Some(1024 * 1024 - 65_535), "the connection window raised to 1 MiB");
    // Exactly the window, then nothing until the client opens it.
    assert_eq!(received, 1000);
    raw.stream.set_read_timeout(Some(Duration::from_millis(700))).unwrap();
    let mut extra = Vec::new();
    while let Some(frame) = raw.next() {
        extra.push((frame.kind, frame.stream, frame.payload.len()));
    }
    assert!(!extra.iter().any(|(kind, _, _)| *kind == DATA), "sent past the window: {extra:?}");
    raw.stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    raw.send(WINDOW_UPDATE, 0, 1, &200_000u32.to_be_bytes());
    raw.send(WINDOW_UPDATE, 0, 0, &200_000u32.to_be_bytes());
    loop {
        let frame = raw.next().expect("the connection ended before the body did");
        if frame.kind == DATA && frame.stream == 1 {
            received += frame.payload.len();
            if frame.flags & END_STREAM == 1 {
                break;
            }
        }
    }
    assert_eq!(received, SIZE);
}
