//! `[limits]`: what a client may send and how slowly, with Apache's defaults
//! (core's LimitRequest* directives and mod_reqtimeout; docs/apache-behaviour.md §10 and §12).
//!
//! A balancer faces clients it does not control: without a bound on the request head, on the body,
//! on how long a client may take to send them and on how many connections it may hold, one client
//! can hold members' connections and the proxy's memory for as long as it likes.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

/// `[limits]` as written.
#[derive(Debug, Default, Deserialize)]
pub struct RawLimits {
    /// `LimitRequestLine`: bytes in the request line (method, target, version); more is a 414.
    pub request_line: Option<Spanned<u64>>,
    /// `LimitRequestFieldSize`: bytes in one header line (`Name: value`); more is a 400.
    pub request_field_size: Option<Spanned<u64>>,
    /// `LimitRequestFields`: header fields in a request; more is a 400.
    pub request_fields: Option<Spanned<u64>>,
    /// `LimitRequestBody`: bytes of request body (0 = no limit); more is a 413.
    pub request_body: Option<Spanned<u64>>,
    /// mod_reqtimeout `header=N`: seconds to receive a request's head, and how long an idle
    /// keep-alive connection waits for the next one.
    pub header_timeout: Option<Spanned<u64>>,
    /// mod_reqtimeout `body=N`: seconds for the first bytes of the body (0 = no body timeout).
    pub body_timeout: Option<Spanned<u64>>,
    /// mod_reqtimeout `body=N-MAX`: the most the body timeout may grow to (0 = no cap).
    pub body_timeout_max: Option<Spanned<u64>>,
    /// mod_reqtimeout `MinRate` of the body: every so many bytes extend the timeout by a second.
    pub body_min_rate: Option<Spanned<u64>>,
    /// Client connections served at once; the next ones wait in the listen backlog.
    pub max_connections: Option<Spanned<u64>>,
}

/// Validated `[limits]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub request_line: usize,
    pub request_field_size: usize,
    pub request_fields: usize,
    /// `u64::MAX` when unlimited.
    pub request_body: u64,
    pub header_timeout: Duration,
    /// `None`: no body timeout.
    pub body_timeout: Option<Duration>,
    pub body_timeout_max: Option<Duration>,
    pub body_min_rate: u64,
    pub max_connections: usize,
}

impl Default for Limits {
    /// Apache's defaults: LimitRequestLine and LimitRequestFieldSize 8190, LimitRequestFields 100,
    /// LimitRequestBody 1 GiB (2.4.54 and later), and Debian's `reqtimeout.conf`:
    /// `RequestReadTimeout header=20-40,minrate=500` and `body=10,minrate=500` (the header
    /// phase's rate extension is not applied: 20 s).
    fn default() -> Limits {
        Limits {
            request_line: 8190,
            request_field_size: 8190,
            request_fields: 100,
            request_body: 1 << 30,
            header_timeout: Duration::from_secs(20),
            body_timeout: Some(Duration::from_secs(10)),
            body_timeout_max: None,
            body_min_rate: 500,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// Client connections served at once by default (nginx: `worker_connections` per worker; Apache's
/// event MPM: MaxRequestWorkers plus its async connections). Each costs a socket and a few KiB.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

impl Limits {
    /// Validate `[limits]`; `problem(value, key, message)` records what is wrong.
    pub(super) fn validate(raw: &RawLimits, mut problem: impl FnMut(std::ops::Range<usize>, String, String)) -> Limits {
        let mut limits = Limits::default();
        let mut int = |value: &Option<Spanned<u64>>, key: &str, range: std::ops::RangeInclusive<u64>, what: &str| {
            let value = value.as_ref()?;
            if range.contains(value.get_ref()) {
                Some(*value.get_ref())
            } else {
                problem(
                    value.span(),
                    format!("limits.{key}"),
                    format!("must be {} to {} ({what})", range.start(), range.end()),
                );
                None
            }
        };
        if let Some(v) = int(&raw.request_line, "request_line", 64..=1 << 20, "bytes") {
            limits.request_line = v as usize;
        }
        if let Some(v) = int(&raw.request_field_size, "request_field_size", 64..=1 << 20, "bytes") {
            limits.request_field_size = v as usize;
        }
        if let Some(v) = int(&raw.request_fields, "request_fields", 1..=10_000, "header fields") {
            limits.request_fields = v as usize;
        }
        if let Some(v) = int(&raw.request_body, "request_body", 0..=u64::MAX, "bytes, 0 = no limit") {
            limits.request_body = if v == 0 { u64::MAX } else { v };
        }
        if let Some(v) = int(&raw.header_timeout, "header_timeout", 1..=3600, "seconds") {
            limits.header_timeout = Duration::from_secs(v);
        }
        if let Some(v) = int(&raw.body_timeout, "body_timeout", 0..=86_400, "seconds, 0 = none") {
            limits.body_timeout = (v > 0).then(|| Duration::from_secs(v));
        }
        if let Some(v) = int(&raw.body_timeout_max, "body_timeout_max", 0..=86_400, "seconds, 0 = no cap") {
            limits.body_timeout_max = (v > 0).then(|| Duration::from_secs(v));
        }
        if let Some(v) = int(&raw.body_min_rate, "body_min_rate", 0..=1 << 30, "bytes per second, 0 = none") {
            limits.body_min_rate = v;
        }
        if let Some(v) = int(&raw.max_connections, "max_connections", 1..=1_000_000, "connections") {
            limits.max_connections = v as usize;
        }
        if let (Some(t), Some(max), Some(span)) =
            (limits.body_timeout, limits.body_timeout_max, raw.body_timeout_max.as_ref().map(Spanned::span))
            && max < t
        {
            problem(span, "limits.body_timeout_max".into(), "must not be less than body_timeout".into());
        }
        limits
    }

    /// hyper's buffer for one request head: room for the longest request line and the most
    /// fields of the longest size, so that each limit is Fulcrum's to enforce, with Apache's status.
    pub fn head_buffer(&self) -> usize {
        (self.request_line + 2 + (self.request_fields + 1) * (self.request_field_size + 2)).max(8192)
    }
}
