//! The access log, in Apache's LogFormat language (`combined` by default), with the per-request
//! env (BALANCER_* and what the rules set) available as `%{VAR}e`.
//!
//! Lines are formatted on the request path and written by a background thread through a bounded
//! queue, so a slow disk never blocks a request; when the queue is full the line is dropped and
//! counted (and the count logged), rather than stalling traffic. Dropping the log (at exit, or the
//! old proxy's after a reload) writes what is queued before it returns, so the lines of the last
//! requests are not lost; it waits at most [`WRITE_ON_DROP`], so a disk that hangs cannot hang an
//! exit or a worker.

use std::io::{BufWriter, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper::header::{HeaderMap, HeaderName};
use hyper::http::request::Parts;

use crate::rules::Env;

/// Apache's `combined` format, with `%b` for the body size.
pub const COMBINED: &str = "%h %l %u %t \"%r\" %>s %b \"%{Referer}i\" \"%{User-Agent}i\"";

/// Lines waiting for the writer before new ones are dropped.
const QUEUE: usize = 16_384;

/// How long dropping the log waits for the writer to write what is queued.
const WRITE_ON_DROP: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    /// `%h`: the client address.
    Client,
    /// `%l`, `%u`: always `-` (no identd, no authentication).
    Dash,
    /// `%t`: `[26/Nov/2026:02:46:01 +0000]`.
    Time,
    /// `%r`: the request line.
    RequestLine,
    /// `%s`, `%>s`: the status sent.
    Status,
    /// `%b` (`-` for none) and `%B` (0 for none): body bytes, from Content-Length.
    Bytes {
        dash: bool,
    },
    /// `%D`: microseconds taken; `%T`: seconds.
    Micros,
    Seconds,
    /// `%v`: the virtual host's ServerName.
    ServerName,
    RequestHeader(HeaderName),
    ResponseHeader(HeaderName),
    Env(String),
}

/// A parsed log format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFormat(Vec<Piece>);

impl LogFormat {
    /// Parse Apache's LogFormat subset: `%h %l %u %t %r %s %>s %b %B %D %T %v %% %{Name}i %{Name}o
    /// %{VAR}e`, or the name `combined` / `common`.
    pub fn parse(format: &str) -> Result<LogFormat, String> {
        let format = match format {
            "combined" => COMBINED,
            "common" => "%h %l %u %t \"%r\" %>s %b",
            other => other,
        };
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut chars = format.chars().peekable();
        while let Some(c) = chars.next() {
            if c != '%' {
                text.push(c);
                continue;
            }
            let mut arg = None;
            if chars.peek() == Some(&'{') {
                chars.next();
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(c) => name.push(c),
                        None => return Err(format!("unterminated `%{{{name}` in `{format}`")),
                    }
                }
                arg = Some(name);
            }
            if chars.peek() == Some(&'>') {
                chars.next();
            }
            let Some(letter) = chars.next() else { return Err(format!("`{format}` ends with a lone `%`")) };
            let piece = match (letter, arg) {
                ('%', None) => {
                    text.push('%');
                    continue;
                }
                ('h', None) | ('a', None) => Piece::Client,
                ('l', None) | ('u', None) => Piece::Dash,
                ('t', None) => Piece::Time,
                ('r', None) => Piece::RequestLine,
                ('s', None) => Piece::Status,
                ('b', None) => Piece::Bytes { dash: true },
                ('B', None) => Piece::Bytes { dash: false },
                ('D', None) => Piece::Micros,
                ('T', None) => Piece::Seconds,
                ('v', None) => Piece::ServerName,
                ('i', Some(name)) => Piece::RequestHeader(header(&name)?),
                ('o', Some(name)) => Piece::ResponseHeader(header(&name)?),
                ('e', Some(name)) => Piece::Env(name),
                (letter, Some(name)) => return Err(format!("`%{{{name}}}{letter}` is not supported in access logs")),
                (letter, None) => return Err(format!("`%{letter}` is not supported in access logs")),
            };
            if !text.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut text)));
            }
            pieces.push(piece);
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        Ok(LogFormat(pieces))
    }
}

fn header(name: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()).map_err(|_| format!("`{name}` is not a header name"))
}

/// Where the log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    Stdout,
    File(PathBuf),
}

/// One finished request, as the log sees it.
#[derive(Debug)]
pub struct Entry<'a> {
    pub client: IpAddr,
    pub received: SystemTime,
    pub elapsed: Duration,
    pub request: &'a Parts,
    pub status: u16,
    pub response_headers: &'a HeaderMap,
    pub env: &'a Env,
    pub server_name: &'a str,
}

/// An open access log.
#[derive(Debug)]
pub struct AccessLog {
    format: LogFormat,
    queue: SyncSender<String>,
    /// Disconnected once the writer has written the last line and ended (in a mutex to be `Sync`).
    written: Mutex<Receiver<()>>,
    dropped: AtomicU64,
}

impl AccessLog {
    pub fn open(target: &LogTarget, format: LogFormat) -> std::io::Result<AccessLog> {
        let out: Box<dyn Write + Send> = match target {
            LogTarget::Stdout => Box::new(std::io::stdout()),
            LogTarget::File(path) => Box::new(std::fs::OpenOptions::new().create(true).append(true).open(path)?),
        };
        let (queue, lines) = std::sync::mpsc::sync_channel(QUEUE);
        let (done, written) = std::sync::mpsc::sync_channel::<()>(0);
        std::thread::Builder::new().name("fulcrum-access-log".into()).spawn(move || {
            write_lines(out, lines);
            drop(done);
        })?;
        Ok(AccessLog { format, queue, written: Mutex::new(written), dropped: AtomicU64::new(0) })
    }

    /// Does the format print env variable `name` (`%{NAME}e`)?
    pub fn reads_env(&self, name: &str) -> bool {
        self.format.0.iter().any(|p| matches!(p, Piece::Env(n) if n == name))
    }

    pub fn log(&self, entry: &Entry<'_>) {
        let line = self.format.render(entry);
        if let Err(TrySendError::Full(_)) = self.queue.try_send(line) {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::warn!("access log cannot keep up: {dropped} lines dropped so far");
            }
        }
    }
}

impl Drop for AccessLog {
    /// Close the queue (the writer then writes what is left and ends) and wait for the writer,
    /// at most [`WRITE_ON_DROP`].
    fn drop(&mut self) {
        let (closed, _) = std::sync::mpsc::sync_channel(0);
        drop(std::mem::replace(&mut self.queue, closed));
        if let Ok(written) = self.written.get_mut() {
            let _ = written.recv_timeout(WRITE_ON_DROP);
        }
    }
}

fn write_lines(out: Box<dyn Write + Send>, lines: Receiver<String>) {
    let mut out = BufWriter::new(out);
    while let Ok(line) = lines.recv() {
        let _ = out.write_all(line.as_bytes());
        while let Ok(more) = lines.try_recv() {
            let _ = out.write_all(more.as_bytes());
        }
        let _ = out.flush();
    }
}

impl LogFormat {
    fn render(&self, e: &Entry<'_>) -> String {
        let mut line = String::with_capacity(160);
        for piece in &self.0 {
            match piece {
                Piece::Text(t) => line.push_str(t),
                Piece::Client => line.push_str(&e.client.to_string()),
                Piece::Dash => line.push('-'),
                Piece::Time => line.push_str(&clf_time(e.received)),
                Piece::RequestLine => {
                    let target = e.request.uri.path_and_query().map_or("/", |pq| pq.as_str());
                    line.push_str(&format!("{} {target} {:?}", e.request.method, e.request.version));
                }
                Piece::Status => line.push_str(&e.status.to_string()),
                Piece::Bytes { dash } => {
                    match e.response_headers.get(hyper::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()) {
                        Some(n) if n != "0" || !dash => line.push_str(n),
                        _ => line.push(if *dash { '-' } else { '0' }),
                    }
                }
                Piece::Micros => line.push_str(&e.elapsed.as_micros().to_string()),
                Piece::Seconds => line.push_str(&e.elapsed.as_secs().to_string()),
                Piece::ServerName => line.push_str(e.server_name),
                Piece::RequestHeader(h) => push_header(&mut line, e.request.headers.get(h)),
                Piece::ResponseHeader(h) => push_header(&mut line, e.response_headers.get(h)),
                Piece::Env(name) => line.push_str(e.env.get(name).unwrap_or("-")),
            }
        }
        line.push('\n');
        line
    }
}

fn push_header(line: &mut String, value: Option<&hyper::header::HeaderValue>) {
    match value {
        // Escape quotes and control characters, as Apache does, so a line cannot be forged.
        Some(v) => {
            for &b in v.as_bytes() {
                match b {
                    b'"' => line.push_str("\\\""),
                    b'\\' => line.push_str("\\\\"),
                    0x20..=0x7e => line.push(b as char),
                    _ => line.push_str(&format!("\\x{b:02x}")),
                }
            }
        }
        None => line.push('-'),
    }
}

/// `[26/Nov/2026:02:46:01 +0000]` (UTC).
fn clf_time(t: SystemTime) -> String {
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "[{day:02}/{}/{year}:{:02}:{:02}:{:02} +0000]",
        MONTHS[(month - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clf_time_is_apaches() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_661_161); // 2026-11-26 02:46:01 UTC
        assert_eq!(clf_time(t), "[26/Nov/2026:02:46:01 +0000]");
        assert_eq!(clf_time(UNIX_EPOCH + Duration::from_secs(951_782_400)), "[29/Feb/2000:00:00:00 +0000]");
    }

    #[test]
    fn combined_with_balancer_variables() {
        let format = LogFormat::parse(&format!("{COMBINED} %{{BALANCER_WORKER_ROUTE}}e %{{UNSET}}e")).unwrap();
        let (mut parts, ()) = hyper::Request::get("/a?b=1").body(()).unwrap().into_parts();
        parts.headers.insert("user-agent", "curl/8 \"quoted\"".parse().unwrap());
        let mut response_headers = HeaderMap::new();
        response_headers.insert("content-length", "42".parse().unwrap());
        let mut env = Env::default();
        env.set("BALANCER_WORKER_ROUTE", "web2");
        let entry = Entry {
            client: [127, 0, 0, 1].into(),
            received: UNIX_EPOCH + Duration::from_secs(1_795_661_161),
            elapsed: Duration::from_micros(1500),
            request: &parts,
            status: 200,
            response_headers: &response_headers,
            env: &env,
            server_name: "www.example.com",
        };
        assert_eq!(
            format.render(&entry),
            "127.0.0.1 - - [26/Nov/2026:02:46:01 +0000] \"GET /a?b=1 HTTP/1.1\" 200 42 \"-\" \"curl/8 \\\"quoted\\\"\" web2 -\n"
        );
    }

    /// Every line logged is in the file once the log is dropped (as at exit), none left queued.
    #[test]
    fn dropping_the_log_writes_every_queued_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let log = AccessLog::open(&LogTarget::File(path.clone()), LogFormat::parse("%r").unwrap()).unwrap();
        let (parts, ()) = hyper::Request::get("/last").body(()).unwrap().into_parts();
        let (headers, env) = (HeaderMap::new(), Env::default());
        let entry = Entry {
            client: [127, 0, 0, 1].into(),
            received: SystemTime::now(),
            elapsed: Duration::ZERO,
            request: &parts,
            status: 200,
            response_headers: &headers,
            env: &env,
            server_name: "www.example.com",
        };
        for _ in 0..1000 {
            log.log(&entry);
        }
        drop(log);
        let written = std::fs::read_to_string(&path).unwrap();
        assert_eq!(written.lines().filter(|l| *l == "GET /last HTTP/1.1").count(), 1000);
    }

    #[test]
    fn bad_formats_are_refused() {
        for bad in ["%q", "%{X}z", "%{unterminated", "trailing %"] {
            assert!(LogFormat::parse(bad).is_err(), "{bad}");
        }
    }
}
