//! One health check of one member: a TCP connection, or an HTTP request on a connection of its own
//! (never a pooled one: a check must see whether the member takes new connections).
//!
//! Time bounds: the connection gets the member's `connectiontimeout`, and the whole check at most
//! `hcinterval` (or the member's `timeout` when that is shorter), so one member's checks never
//! overlap and a member that accepts connections but stops answering fails its check.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::balancer::LoadReport;
use crate::config::{HealthCheck, LoadSource, MemberConfig};

/// The most of a response a check reads: enough for a status page, bounded for a member that
/// streams.
pub const MAX_READ: usize = 64 * 1024;

/// Check `member` once: `Ok` when it passes (with the load it reported, when its check reads one
/// and the answer has one), else why it failed, in words for the log.
pub async fn check(member: &MemberConfig, check: &HealthCheck) -> Result<Option<LoadReport>, String> {
    let budget = member.timeout.map_or(check.interval, |t| t.min(check.interval));
    match tokio::time::timeout(budget, exchange(member, check)).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {}", millis(budget))),
    }
}

async fn exchange(member: &MemberConfig, check: &HealthCheck) -> Result<Option<LoadReport>, String> {
    let address = member.socket_address();
    let connect = TcpStream::connect(address.as_str());
    let stream = match member.connection_timeout {
        Some(t) => tokio::time::timeout(t, connect)
            .await
            .map_err(|_| format!("connecting to {address} took longer than {}", millis(t)))?,
        None => connect.await,
    }
    .map_err(|e| format!("connecting to {address}: {e}"))?;
    let Some((method, http11)) = check.method.http() else {
        return Ok(None);
    };
    // An https:// member is checked over TLS, with its balancer's settings (a certificate it
    // no longer passes fails the check).
    match &member.tls {
        None => ask(member, check, &address, stream, method, http11).await,
        Some(tls) => {
            let stream = tls
                .connector
                .connect(tls.server_name.clone(), stream)
                .await
                .map_err(|e| format!("TLS handshake with {address} failed: {e}"))?;
            ask(member, check, &address, stream, method, http11).await
        }
    }
}

/// Send the check's request on `stream` and judge the answer.
async fn ask(
    member: &MemberConfig,
    check: &HealthCheck,
    address: &str,
    mut stream: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    method: &str,
    http11: bool,
) -> Result<Option<LoadReport>, String> {
    let request = format!(
        "{method} {} HTTP/1.{}\r\nHost: {}\r\nUser-Agent: Fulcrum-HealthCheck/{}\r\n{}\r\n",
        check.uri,
        if http11 { 1 } else { 0 },
        member.authority,
        env!("CARGO_PKG_VERSION"),
        if http11 { "Connection: close\r\n" } else { "" }
    );
    stream.write_all(request.as_bytes()).await.map_err(|e| format!("sending the check to {address}: {e}"))?;
    stream.flush().await.map_err(|e| format!("sending the check to {address}: {e}"))?;
    let wants_body = check.method.has_body() && (check.expect.reads_body() || check.load == Some(LoadSource::Body));
    let header = match &check.load {
        Some(LoadSource::Header(name)) => Some(name.as_str()),
        _ => None,
    };
    let answer = read_response(&mut stream, wants_body, header).await.map_err(|e| format!("{address}: {e}"))?;
    check.expect.verdict(answer.status, &answer.body)?;
    let report = match &check.load {
        Some(LoadSource::Body) => Some(String::from_utf8_lossy(&answer.body).into_owned()),
        Some(LoadSource::Header(_)) => answer.header,
        None => None,
    };
    Ok(report.and_then(|text| {
        let parsed = crate::config::health::parse_load_report(&text).map(|(busy, ready)| LoadReport { busy, ready });
        if parsed.is_none() {
            tracing::debug!(member = %member.url, "no busy=N&ready=M load report in {text:?}");
        }
        parsed
    }))
}

/// What a check read of an answer.
struct Answer {
    status: u16,
    /// The body (when asked for), de-chunked, at most [`MAX_READ`] bytes.
    body: Vec<u8>,
    /// The value of the header asked for, if the answer has it.
    header: Option<String>,
}

/// Read a response: its status, the value of `header` if asked for, and when `wants_body` its
/// body. Stops as soon as it has what it needs.
async fn read_response(
    stream: &mut (impl tokio::io::AsyncRead + Unpin),
    wants_body: bool,
    header: Option<&str>,
) -> Result<Answer, String> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await.map_err(|e| format!("reading the answer: {e}"))?;
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        let head_len = match response.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if n == 0 => {
                return Err(if buf.is_empty() {
                    "the connection closed without an answer".into()
                } else {
                    "the connection closed in the middle of the answer's head".into()
                });
            }
            Ok(httparse::Status::Partial) if buf.len() > MAX_READ => return Err("an answer head past 64 KiB".into()),
            Ok(httparse::Status::Partial) => continue,
            Err(e) => return Err(format!("not an HTTP response: {e}")),
        };
        let status = response.code.unwrap_or(0);
        // An interim answer (100 Continue): the real one follows.
        if (100..200).contains(&status) && status != 101 {
            buf.drain(..head_len);
            continue;
        }
        let wanted = header.and_then(|name| {
            response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).into_owned())
        });
        if !wants_body {
            return Ok(Answer { status, body: Vec::new(), header: wanted });
        }
        let header = |name: &str| {
            response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
        };
        let chunked = header("transfer-encoding").is_some_and(|te| te.ends_with("chunked"));
        let length = if chunked { None } else { header("content-length").and_then(|l| l.parse::<usize>().ok()) };
        let mut body = buf.split_off(head_len);
        let mut ended = n == 0;
        while !ended && body.len() < MAX_READ && !complete(&body, chunked, length) {
            let n = stream.read(&mut chunk).await.map_err(|e| format!("reading the answer: {e}"))?;
            body.extend_from_slice(&chunk[..n]);
            ended = n == 0;
        }
        if chunked {
            body = dechunk(&body);
        }
        if let Some(length) = length {
            body.truncate(length);
        }
        body.truncate(MAX_READ);
        return Ok(Answer { status, body, header: wanted });
    }
}

/// Whether `body` holds the whole body.
fn complete(body: &[u8], chunked: bool, length: Option<usize>) -> bool {
    if chunked {
        return body.ends_with(b"\r\n0\r\n\r\n") || body.starts_with(b"0\r\n\r\n");
    }
    length.is_some_and(|l| body.len() >= l)
}

/// The data of a chunked body (as much of it as is there; extensions and trailers dropped).
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    while let Some(line_end) = raw.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&raw[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(size_text, 16) else { break };
        if size == 0 {
            break;
        }
        let data = &raw[line_end + 2..];
        let take = size.min(data.len());
        out.extend_from_slice(&data[..take]);
        if take < size || data.len() < size + 2 {
            break;
        }
        raw = &data[size + 2..];
    }
    out
}

fn millis(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::net::TcpListener;

    use super::*;
    use crate::config::{HcCondition, HcMethod};

    /// A member's answer, where the check reads the report → the report.
    #[tokio::test]
    async fn load_reports_are_read_from_the_body_or_a_header() {
        /// The member's answer, the check, where it reads the report, the report (busy, ready).
        type Case = (&'static str, HcMethod, LoadSource, Option<(u32, u32)>);
        let cases: &[Case] = &[
            ("HTTP/1.0 200 OK\r\n\r\nbusy=2&ready=30", HcMethod::Get, LoadSource::Body, Some((2, 30))),
            (
                "HTTP/1.1 200 OK\r\nX-Load: ready=5&busy=1\r\nContent-Length: 0\r\n\r\n",
                HcMethod::Head11,
                LoadSource::Header("x-load".into()),
                Some((1, 5)),
            ),
            ("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", HcMethod::Get11, LoadSource::Body, None),
        ];
        for (answer, method, source, expected) in cases {
            let (port, _) = answering(answer).await;
            let mut hc = with(*method, HcCondition::default_condition(), 1000);
            hc.load = Some(source.clone());
            let report = check(&member(port), &hc).await.expect("passes");
            assert_eq!(report.map(|r| (r.busy, r.ready)), *expected, "{answer:?}");
        }
    }

    #[test]
    fn chunked_bodies_are_decoded() {
        assert_eq!(dechunk(b"5\r\nhello\r\n6;x=1\r\n world\r\n0\r\n\r\n"), b"hello world");
        assert_eq!(dechunk(b"5\r\nhel"), b"hel");
        assert_eq!(dechunk(b"zz\r\n"), b"");
    }

    fn member(port: u16) -> MemberConfig {
        let text = format!(
            "listen = [\"127.0.0.1:0\"]\n[[vhost]]\nserver_name = \"b\"\n\
             proxy_pass = [{{ path = \"/\", to = \"balancer://b/\" }}]\n[balancer.b]\n\
             [[balancer.b.member]]\nurl = \"http://127.0.0.1:{port}/app\"\nhcmethod = \"GET\"\nhcuri = \"/health\"\n"
        );
        crate::config::Config::parse(&text, std::path::Path::new("t.toml"))
            .unwrap()
            .balancers
            .remove(0)
            .members
            .remove(0)
    }

    /// A member on a port of its own that answers every connection with `answer` (or says
    /// nothing when it is empty) and records the request it read.
    async fn answering(answer: &'static str) -> (u16, Arc<std::sync::Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let requests = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let requests = Arc::clone(&requests);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let n = stream.read(&mut buf).await.unwrap_or(0);
                    requests.lock().unwrap().push(String::from_utf8_lossy(&buf[..n]).into_owned());
                    if answer.is_empty() {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                    }
                    let _ = stream.write_all(answer.as_bytes()).await;
                });
            }
        });
        (port, seen)
    }

    fn with(method: HcMethod, expect: Arc<HcCondition>, interval_ms: u64) -> HealthCheck {
        HealthCheck {
            method,
            uri: "/app/health".into(),
            interval: Duration::from_millis(interval_ms),
            passes: 1,
            fails: 1,
            expect,
            load: None,
        }
    }

    /// Member answer, check → verdict.
    #[tokio::test]
    async fn checks_read_what_they_need() {
        let maintenance = Arc::new(HcCondition {
            name: "up".into(),
            status: vec![200..=299],
            body: None,
            body_not: Some(regex::Regex::new("maintenance").unwrap()),
        });
        let cases: &[(&str, HcMethod, &Arc<HcCondition>, Option<&str>)] = &[
            ("HTTP/1.0 200 OK\r\n\r\n", HcMethod::Get, &HcCondition::default_condition(), None),
            (
                "HTTP/1.1 302 Found\r\nContent-Length: 0\r\n\r\n",
                HcMethod::Head,
                &HcCondition::default_condition(),
                None,
            ),
            (
                "HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n",
                HcMethod::Options11,
                &HcCondition::default_condition(),
                Some("status 500"),
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 16\r\n\r\nmaintenance mode",
                HcMethod::Get11,
                &maintenance,
                Some("matches /maintenance/"),
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nmaint\r\n6\r\nenance\r\n0\r\n\r\n",
                HcMethod::Get11,
                &maintenance,
                Some("matches"),
            ),
            ("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", HcMethod::Get11, &maintenance, None),
            ("garbage\r\n\r\n", HcMethod::Get, &HcCondition::default_condition(), Some("not an HTTP response")),
            ("", HcMethod::Get, &HcCondition::default_condition(), Some("no answer within 300 ms")),
        ];
        for (answer, method, expect, expected) in cases {
            let (port, seen) = answering(answer).await;
            let result = check(&member(port), &with(*method, Arc::clone(expect), 300)).await;
            match expected {
                None => assert!(result.is_ok(), "{answer:?}: {result:?}"),
                Some(why) => assert!(result.as_ref().is_err_and(|w| w.contains(why)), "{answer:?}: {result:?}"),
            }
            let request = seen.lock().unwrap().first().cloned().unwrap_or_default();
            let (verb, http11) = method.http().unwrap();
            let line = format!("{verb} /app/health HTTP/1.{}\r\n", u8::from(http11));
            assert!(request.starts_with(&line), "{method:?} sent {request:?}");
            assert!(request.contains(&format!("Host: 127.0.0.1:{port}\r\n")), "{request:?}");
        }
    }

    #[tokio::test]
    async fn tcp_checks_connect_and_nothing_else() {
        let (port, seen) = answering("").await;
        assert_eq!(check(&member(port), &with(HcMethod::Tcp, HcCondition::default_condition(), 1000)).await, Ok(None));
        // A port nobody listens on: take one and let it go.
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
        let refused = check(&member(closed), &with(HcMethod::Tcp, HcCondition::default_condition(), 1000)).await;
        assert!(refused.as_ref().is_err_and(|w| w.contains("connecting to 127.0.0.1:")), "{refused:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(seen.lock().unwrap().iter().filter(|r| !r.is_empty()).count(), 0, "a TCP check sends nothing");
    }
}
