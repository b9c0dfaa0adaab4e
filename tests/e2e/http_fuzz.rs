//! Bounded fuzzing of the request path through a real listener: random and grammar-shaped
//! HTTP/1.1 request heads and bodies (bad chunk sizes, huge headers, invalid bytes, duplicated
//! Content-Length/Transfer-Encoding, absolute-form targets, odd Hosts, truncated input, pipelines)
//! over raw TCP to the real binary in front of two echo backends. After each case: every response
//! Fulcrum sent starts with a valid status line, a normal request still gets a 200, and nothing
//! panicked.
//!
//! Bounded to `FULCRUM_FUZZ_CASES` cases (1000) or `FULCRUM_FUZZ_SECS` seconds (10), whichever ends
//! first. The seed is printed; `FULCRUM_FUZZ_SEED=N` reruns a campaign:
//! `FULCRUM_FUZZ_SEED=N cargo test -p fulcrum --test e2e http_fuzz -- --nocapture`.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::support::*;

/// SplitMix64: a small seeded generator, so that a failing campaign can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

const METHODS: &[&str] = &["GET", "POST", "PUT", "HEAD", "DELETE", "OPTIONS", "PATCH", "CONNECT", "TRACE", "M-SEARCH"];
const TARGETS: &[&str] = &[
    "/",
    "/app/x?a=1&b=2",
    "/server-status",
    "/server-status/../x",
    "/balancer-manager",
    "/script.php?q=1",
    "/f?BALANCEID=x.web2",
    "/f;BALANCEID=x.web1",
    "//double//slash",
    "/%2e%2e/%2e%2e/etc/passwd",
    "/a/%2F/b",
    "/%00",
    "/%zz",
    "/../../../",
    "/./././",
    "http://www.example.com/absolute",
    "http://other.example/absolute?x",
    "https://www.example.com/",
    "http://user:pass@www.example.com/",
    "http://[::1]:80/",
    "www.example.com:80",
    "*",
    "",
    "/\u{e9}",
];
const HOSTS: &[&str] = &[
    "www.example.com",
    "www.example.com:80",
    "WWW.EXAMPLE.COM",
    "other.example",
    "",
    " ",
    "a b",
    "[::1",
    "[::1]:99999",
    "www.example.com:99999",
    "www.example.com:-1",
    "user@www.example.com",
    "www.example.com.",
    "127.0.0.1",
    "%00",
];
const HEADERS: &[(&str, &str)] = &[
    ("Cookie", "BALANCEID=balancer.web2"),
    ("Cookie", "a=1; BALANCEID=x.web1, b"),
    ("X-Forwarded-For", "1.2.3.4"),
    ("X-Forwarded-For", "1.2.3.4, 999.999.999.999"),
    ("User-Agent", "fuzz/1.0"),
    ("Accept", "*/*"),
    ("Connection", "close"),
    ("Connection", "keep-alive, Upgrade"),
    ("Upgrade", "websocket"),
    ("Expect", "100-continue"),
    ("Expect", "something-else"),
    ("TE", "trailers"),
    ("Proxy-Connection", "keep-alive"),
    ("Keep-Alive", "timeout=1"),
    ("Content-Type", "text/plain"),
    ("X-Empty", ""),
    ("Max-Forwards", "0"),
];

/// A request that a well-behaved client could send, as separate parts for the mutations.
struct Request {
    line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// `"\r\n"`, or a bare `"\n"`.
    eol: &'static str,
}

impl Request {
    fn valid(rng: &mut Rng) -> Request {
        let method = *rng.pick(METHODS);
        let target = *rng.pick(TARGETS);
        let version = *rng.pick(&["HTTP/1.1", "HTTP/1.1", "HTTP/1.1", "HTTP/1.0"]);
        let mut headers = vec![("Host".to_string(), rng.pick(HOSTS).to_string())];
        for _ in 0..rng.below(4) {
            let (n, v) = rng.pick(HEADERS);
            headers.push((n.to_string(), v.to_string()));
        }
        let mut body = Vec::new();
        match rng.below(3) {
            0 => {}
            1 => {
                let len = rng.below(2000);
                body = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
                headers.push(("Content-Length".into(), len.to_string()));
            }
            _ => {
                headers.push(("Transfer-Encoding".into(), "chunked".into()));
                for _ in 0..rng.below(4) {
                    let n = 1 + rng.below(300);
                    body.extend_from_slice(format!("{n:x}\r\n").as_bytes());
                    body.extend(std::iter::repeat_n(b'z', n));
                    body.extend_from_slice(b"\r\n");
                }
                body.extend_from_slice(b"0\r\n\r\n");
            }
        }
        Request { line: format!("{method} {target} {version}"), headers, body, eol: "\r\n" }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(self.line.as_bytes());
        out.extend_from_slice(self.eol.as_bytes());
        for (n, v) in &self.headers {
            out.extend_from_slice(format!("{n}: {v}").as_bytes());
            out.extend_from_slice(self.eol.as_bytes());
        }
        out.extend_from_slice(self.eol.as_bytes());
        out.extend_from_slice(&self.body);
        out
    }
}

const BAD_CHUNK_SIZES: &[&str] =
    &["zz", "-1", "FFFFFFFFFFFFFFFFFFFF", "1;ext=\"x\"", " 5", "5 ", "0x5", "+5", "", "5\n", "1\r\r", "ffffffff"];
const BAD_BYTES: &[u8] = &[0, b'\r', b'\n', 0x7f, 0xff, 0x80, b' ', b'\t', b':', b'"', 0x0b];

/// One case: a valid request with a few mutations, or pure noise.
fn case(rng: &mut Rng) -> (Vec<u8>, String) {
    if rng.chance(5) {
        let n = rng.below(300);
        let noise: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
        return (noise, "random bytes".into());
    }
    let mut req = Request::valid(rng);
    let mut what = vec![req.line.clone()];
    for _ in 0..rng.below(4) {
        match rng.below(12) {
            0 => {
                // Duplicated or conflicting framing headers.
                let (n, v) = *rng.pick(&[
                    ("Content-Length", "5"),
                    ("Content-Length", "0"),
                    ("Content-Length", "-1"),
                    ("Content-Length", "5, 5"),
                    ("Content-Length", "18446744073709551616"),
                    ("Content-Length", " 7 "),
                    ("Transfer-Encoding", "chunked"),
                    ("Transfer-Encoding", "gzip, chunked"),
                    ("Transfer-Encoding", "chunked, identity"),
                    ("Transfer-Encoding", "identity"),
                    ("transfer-encoding", "CHUNKED"),
                ]);
                req.headers.push((n.into(), v.into()));
                what.push(format!("+{n}: {v}"));
            }
            1 => {
                // A bad chunk size in a chunked body.
                req.headers.retain(|(n, _)| !n.eq_ignore_ascii_case("content-length"));
                req.headers.push(("Transfer-Encoding".into(), "chunked".into()));
                let size = *rng.pick(BAD_CHUNK_SIZES);
                req.body = format!("{size}\r\nhello\r\n0\r\n\r\n").into_bytes();
                what.push(format!("chunk size {size:?}"));
            }
            2 => {
                // A huge header value, or very many headers.
                if rng.chance(50) {
                    let len = *rng.pick(&[8 * 1024, 64 * 1024, 200 * 1024]);
                    req.headers.push(("X-Huge".into(), "h".repeat(len)));
                    what.push(format!("{len}-byte header"));
                } else {
                    let count = *rng.pick(&[100, 101, 500]);
                    for i in 0..count {
                        req.headers.push((format!("X-Many-{i}"), "v".into()));
                    }
                    what.push(format!("{count} headers"));
                }
            }
            3 => {
                // An invalid byte somewhere in the head.
                let mut head = req.line.clone().into_bytes();
                let at = rng.below(head.len() + 1);
                head.insert(at, *rng.pick(BAD_BYTES));
                req.line = String::from_utf8_lossy(&head).into_owned();
                what.push(format!("bad byte in the request line at {at}"));
            }
            4 if !req.headers.is_empty() => {
                let i = rng.below(req.headers.len());
                let bad = *rng.pick(BAD_BYTES) as char;
                if rng.chance(50) {
                    req.headers[i].0.push(bad);
                } else {
                    req.headers[i].1.insert(0, bad);
                }
                what.push(format!("bad byte {bad:?} in header {i}"));
            }
            5 => {
                // Another Host, or none.
                if rng.chance(50) {
                    req.headers.push(("Host".into(), rng.pick(HOSTS).to_string()));
                    what.push("two Hosts".into());
                } else {
                    req.headers.retain(|(n, _)| n != "Host");
                    what.push("no Host".into());
                }
            }
            6 => {
                req.eol = "\n";
                what.push("bare LF".into());
            }
            7 => {
                // A header line folded onto the next (obs-fold), or without a colon.
                let fold = *rng.pick(&[" folded", "\tfolded", "no-colon-here", ": empty-name"]);
                req.headers.push((fold.into(), String::new()));
                what.push(format!("odd header line {fold:?}"));
            }
            8 => {
                // Body length disagrees with Content-Length.
                if rng.chance(50) {
                    req.body.extend_from_slice(b"extra bytes after the body");
                } else {
                    req.body.truncate(req.body.len() / 2);
                }
                what.push("body length off".into());
            }
            9 => {
                let version = *rng.pick(&["HTTP/1.2", "HTTP/2.0", "HTTP/0.9", "HTTP/1", "http/1.1", "HTTP/1.1 x", ""]);
                if let Some((head, _)) = req.line.rsplit_once(' ') {
                    req.line = format!("{head} {version}");
                }
                what.push(format!("version {version:?}"));
            }
            10 => {
                let long = "/p".repeat(5000);
                let target = *rng.pick(&["/a b", "/?\u{7f}", "/#frag", "/\\x", "/a?b#c", long.as_str()]);
                let parts: Vec<&str> = req.line.splitn(3, ' ').collect();
                if parts.len() == 3 {
                    req.line = format!("{} {target} {}", parts[0], parts[2]);
                }
                what.push("odd target".into());
            }
            _ => {
                let i = rng.below(req.headers.len() + 1);
                if i < req.headers.len() {
                    let h = req.headers[i].clone();
                    req.headers.insert(i, h);
                    what.push(format!("duplicated header {i}"));
                }
            }
        }
    }
    let mut bytes = req.bytes();
    if rng.chance(15) {
        // A second request on the same connection (a pipeline).
        bytes.extend(Request::valid(rng).bytes());
        what.push("pipelined".into());
    }
    if rng.chance(15) {
        let cut = rng.below(bytes.len() + 1);
        bytes.truncate(cut);
        what.push(format!("truncated at {cut}"));
    }
    (bytes, what.join(" | "))
}

/// What came back on one connection.
struct Exchange {
    received: Vec<u8>,
    /// The read deadline passed with the connection still open.
    timed_out: bool,
}

/// Send `bytes` (in a few writes), half-close, and read until the server closes or `deadline`.
fn exchange(addr: SocketAddr, bytes: &[u8], rng: &mut Rng, deadline: Duration) -> Exchange {
    let mut received = Vec::new();
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
        panic!("cannot connect to Fulcrum at {addr}");
    };
    stream.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut rest = bytes;
    while !rest.is_empty() {
        let n = if rng.chance(30) { 1 + rng.below(rest.len()) } else { rest.len() };
        // The server may close early (a 400 or 431 before the whole request is read).
        if stream.write_all(&rest[..n]).is_err() {
            break;
        }
        rest = &rest[n..];
    }
    let _ = stream.shutdown(Shutdown::Write);
    let end = Instant::now() + deadline;
    let mut buf = [0u8; 16 * 1024];
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Exchange { received, timed_out: true };
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return Exchange { received, timed_out: true };
            }
            // A reset after the answer (the server closed with unread request bytes): keep what came.
            Err(_) => break,
        }
    }
    Exchange { received, timed_out: false }
}

/// `HTTP/1.x NNN reason\r\n`: the status, or why the line is not one.
fn status_line(line: &[u8]) -> Result<u16, String> {
    let text = std::str::from_utf8(line).map_err(|_| format!("status line is not UTF-8: {line:?}"))?;
    let rest = text
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| text.strip_prefix("HTTP/1.0 "))
        .ok_or_else(|| format!("not an HTTP/1.x status line: {text:?}"))?;
    let code = rest.get(..3).filter(|c| c.bytes().all(|b| b.is_ascii_digit())).ok_or(format!("no status: {text:?}"))?;
    if rest.len() > 3 && !rest[3..].starts_with(' ') {
        return Err(format!("no space after the status: {text:?}"));
    }
    let status: u16 = code.parse().map_err(|_| format!("bad status {code:?}"))?;
    if !(100..=599).contains(&status) {
        return Err(format!("status {status} out of range"));
    }
    Ok(status)
}

/// Walk the responses in `data`: each must start with a valid status line; bodies are skipped by
/// their framing. Stops (successfully) where framing cannot be known (a HEAD answer, a body that
/// runs to the close). Returns the statuses seen.
fn check_responses(data: &[u8], head_requested: bool) -> Result<Vec<u16>, String> {
    let mut statuses = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let rest = &data[at..];
        let Some(head_end) = rest.windows(4).position(|w| w == b"\r\n\r\n") else {
            // A partial head: only its first line can be checked.
            let line_end = rest.windows(2).position(|w| w == b"\r\n").unwrap_or(rest.len());
            statuses.push(status_line(&rest[..line_end])?);
            return Ok(statuses);
        };
        let head = &rest[..head_end];
        let line_end = head.windows(2).position(|w| w == b"\r\n").unwrap_or(head.len());
        let status = status_line(&head[..line_end])?;
        statuses.push(status);
        let head_text = String::from_utf8_lossy(head).to_ascii_lowercase();
        let header = |name: &str| {
            head_text.split("\r\n").skip(1).find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
        };
        at += head_end + 4;
        if (100..200).contains(&status) || status == 204 || status == 304 {
            continue;
        }
        if head_requested {
            return Ok(statuses);
        }
        if let Some(len) = header("content-length:") {
            let len: usize = len.parse().map_err(|_| format!("bad Content-Length in a response: {len:?}"))?;
            at += len;
        } else if header("transfer-encoding:").is_some_and(|te| te.contains("chunked")) {
            loop {
                let rest = &data[at.min(data.len())..];
                let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else { return Ok(statuses) };
                let size_text = String::from_utf8_lossy(&rest[..eol]);
                let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                    .map_err(|_| format!("bad chunk size in a response: {size_text:?}"))?;
                at += eol + 2 + size + 2;
                if size == 0 {
                    break;
                }
            }
        } else {
            return Ok(statuses);
        }
    }
    Ok(statuses)
}

/// A plain GET on a fresh connection: the status.
fn normal_request(addr: SocketAddr) -> Result<u16, String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| format!("connect: {e}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream
        .write_all(b"GET /app/check HTTP/1.1\r\nHost: www.example.com\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut data = Vec::new();
    stream.read_to_end(&mut data).map_err(|e| format!("read: {e}"))?;
    check_responses(&data, false)?.first().copied().ok_or_else(|| "no answer".to_string())
}

fn config(web1: &EchoServer, web2: &EchoServer, log: &str) -> String {
    let rules = std::fs::read_to_string(repo_root().join("examples/apache-guide.toml")).unwrap();
    let directives = rules.split("directives = '''").nth(1).and_then(|r| r.split("'''").next()).unwrap();
    format!(
        r#"listen = ["127.0.0.1:0"]
access_log = "{log}"
proxy_timeout = 5

[[vhost]]
server_name = "www.example.com"
preserve_host = true
proxy_pass = [
    {{ path = "/balancer-manager", to = "!" }},
    {{ path = "/server-status", to = "!" }},
    {{ path = "/", to = "balancer://default/" }},
]
proxy_pass_reverse = [{{ path = "/", to = "balancer://default/" }}]
proxy_pass_match = [{{ regex = "(^/script.php)", to = "{web1}/$1", timeout = 5 }}]

[[vhost.rules]]
directives = '''{directives}'''

[balancer.default]
stickysession = "BALANCEID"
failonstatus = [410]

[[balancer.default.member]]
url = "{web1}"
route = "web1"

[[balancer.default.member]]
url = "{web2}"
route = "web2"
"#,
        web1 = web1.url(),
        web2 = web2.url(),
    )
}

fn escaped(bytes: &[u8]) -> String {
    let shown: String = bytes.iter().take(600).flat_map(|&b| std::ascii::escape_default(b)).map(char::from).collect();
    if bytes.len() > 600 { format!("{shown}... ({} bytes)", bytes.len()) } else { shown }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_fuzz_through_a_real_listener() {
    let (web1, web2) = two_backends().await;
    let seed = env_number(
        "FULCRUM_FUZZ_SEED",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64),
    );
    let cases = env_number("FULCRUM_FUZZ_CASES", 1000);
    let budget = Duration::from_secs(env_number("FULCRUM_FUZZ_SECS", 10));
    println!("http fuzz: seed {seed} (rerun with FULCRUM_FUZZ_SEED={seed}), up to {cases} cases or {budget:?}");
    let fulcrum = Fulcrum::start(&config(&web1, &web2, "access.log"));
    let addr = fulcrum.addr;

    let report = tokio::task::spawn_blocking(move || {
        let mut rng = Rng(seed);
        let started = Instant::now();
        let mut statuses = std::collections::BTreeMap::<u16, u32>::new();
        // A few examples of Fulcrum's own 5xx answers, to read in the output.
        let mut server_errors = Vec::new();
        let (mut ran, mut silent, mut timed_out) = (0u64, 0u32, 0u32);
        while ran < cases && started.elapsed() < budget {
            let (bytes, what) = case(&mut rng);
            let head_requested = bytes.windows(5).any(|w| w == b"HEAD ");
            let got = exchange(addr, &bytes, &mut rng, Duration::from_millis(1500));
            let fail = |why: String| {
                format!(
                    "case {ran} (seed {seed}): {why}\n  sent: {what}\n  bytes: {}\n  got: {}",
                    escaped(&bytes),
                    escaped(&got.received)
                )
            };
            match check_responses(&got.received, head_requested) {
                Ok(seen) => {
                    for s in &seen {
                        *statuses.entry(*s).or_default() += 1;
                    }
                    if seen.iter().any(|s| *s >= 500) && server_errors.len() < 8 {
                        server_errors.push(format!("{seen:?} for {what}"));
                    }
                    silent += u32::from(seen.is_empty() && !got.timed_out);
                    timed_out += u32::from(got.timed_out);
                }
                Err(why) => return Err(fail(why)),
            }
            match normal_request(addr) {
                Ok(200) => {}
                Ok(other) => return Err(fail(format!("a normal request afterwards got {other}"))),
                Err(why) => return Err(fail(format!("a normal request afterwards failed: {why}"))),
            }
            ran += 1;
        }
        Ok((ran, started.elapsed(), statuses, silent, timed_out, server_errors))
    })
    .await
    .unwrap();

    let log = fulcrum.log();
    match report {
        Ok((ran, took, statuses, silent, timed_out, server_errors)) => {
            println!(
                "http fuzz: {ran} cases in {took:.1?}; statuses {statuses:?}; {silent} closed without an answer, \
                 {timed_out} still open at the deadline"
            );
            for example in server_errors {
                println!("  5xx: {example}");
            }
            assert!(ran > 0, "no case ran");
        }
        Err(failure) => panic!("{failure}\nFulcrum's log (tail):\n{}", tail(&log)),
    }
    assert!(!log.contains("panicked"), "Fulcrum panicked:\n{}", tail(&log));
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// The status of the first answer to `bytes` (sent whole, then half-closed), or 0 for none.
fn first_status(addr: SocketAddr, bytes: &[u8]) -> u16 {
    let got = exchange(addr, bytes, &mut Rng(0), Duration::from_secs(10));
    check_responses(&got.received, false).ok().and_then(|s| s.first().copied()).unwrap_or(0)
}

/// Found by the campaign above: a request body that breaks its own framing (a bad chunk size, a
/// chunk longer than its size) is answered 502 Bad Gateway, and logged as a member failure, where
/// Apache answers 400 Bad Request: the member did nothing wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_request_body_is_a_400_as_in_apache() {
    let (web1, web2) = two_backends().await;
    let apache = crate::apache::Apache::start(&crate::apache::Members {
        web1: &web1.url(),
        web2: &web2.url(),
        web1_params: "retry=60",
        web2_params: "retry=60",
    });
    let fulcrum = Fulcrum::start(&config(&web1, &web2, "-"));
    let head = "POST /app HTTP/1.1\r\nHost: www.example.com\r\nTransfer-Encoding: chunked\r\n\r\n";
    let (mut apache_says, mut fulcrum_says) = (Vec::new(), Vec::new());
    for body in ["zz\r\nhello\r\n0\r\n\r\n", "1\r\nhello\r\n0\r\n\r\n", "-1\r\nx\r\n0\r\n\r\n"] {
        let request = format!("{head}{body}");
        apache_says.push((body, first_status(apache.addr, request.as_bytes())));
        fulcrum_says.push((body, first_status(fulcrum.addr, request.as_bytes())));
    }
    assert_eq!(fulcrum_says, apache_says);
}
