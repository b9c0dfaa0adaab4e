//! Active health checks as configured: mod_proxy_hcheck's member parameters (`hcmethod`, `hcuri`,
//! `hcinterval`, `hcpasses`, `hcfails`, `hcexpr`), its templates (`ProxyHCTemplate`, here
//! `[hctemplate.NAME]`) and the part of its conditions (`ProxyHCExpr`, here `[hcexpr.NAME]`) that
//! a check can decide: status ranges, and for GET a regex the body must (or must not) match.
//!
//! ```toml
//! [hcexpr.ok234]                  # ProxyHCExpr ok234 {%{REQUEST_STATUS} =~ /^[234]/}
//! status = ["200-499"]
//!
//! [hctemplate.web]                # ProxyHCTemplate web hcmethod=GET hcuri=/health …
//! hcmethod = "GET"
//! hcuri = "/health"
//! hcinterval = 5                  # seconds, or "500ms" (Apache's time units: ms, s, mi, h)
//! hcexpr = "ok234"
//!
//! [[balancer.default.member]]
//! url = "http://10.0.0.1:8080"
//! hctemplate = "web"              # the member's own hc* keys override the template's
//! hcfails = 2
//! ```
//!
//! A member may also report its own load in its check's answer (`hcload`): mod_heartmonitor's
//! `busy=N&ready=M`, in the body of a GET check (`hcload = "body"`) or in a response header
//! (`hcload = "header:X-Load"`). The `heartbeat` lbmethod balances on it.
//!
//! Defaults are Apache's: no check unless `hcmethod` is set, 30 s apart, one failure takes the
//! member out and one pass brings it back, and without `hcexpr` a 2xx or 3xx status passes.
//! Writing an `hc*` key without any `hcmethod` is an error here (Apache would silently not check).

use std::collections::BTreeMap;
use std::ops::{Range, RangeInclusive};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

/// Apache's default `hcinterval`.
pub const DEFAULT_HC_INTERVAL: Duration = Duration::from_secs(30);
/// The shortest `hcinterval` accepted (Apache's watchdog runs every 100 ms).
pub const MIN_HC_INTERVAL: Duration = Duration::from_millis(100);

/// How a member is checked (`hcmethod`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HcMethod {
    /// A TCP connection can be made.
    Tcp,
    Options,
    Head,
    Get,
    /// The same requests over HTTP/1.1 (`OPTIONS11`, `HEAD11`, `GET11`).
    Options11,
    Head11,
    Get11,
}

impl HcMethod {
    /// Apache's names; `NONE` (no check) is accepted too, to turn a template's check off.
    const NAMES: [(&'static str, Option<HcMethod>); 8] = [
        ("NONE", None),
        ("TCP", Some(HcMethod::Tcp)),
        ("OPTIONS", Some(HcMethod::Options)),
        ("HEAD", Some(HcMethod::Head)),
        ("GET", Some(HcMethod::Get)),
        ("OPTIONS11", Some(HcMethod::Options11)),
        ("HEAD11", Some(HcMethod::Head11)),
        ("GET11", Some(HcMethod::Get11)),
    ];

    fn parse(name: &str) -> Result<Option<HcMethod>, String> {
        Self::NAMES.iter().find(|(n, _)| n.eq_ignore_ascii_case(name.trim())).map(|(_, m)| *m).ok_or_else(|| {
            let known: Vec<_> = Self::NAMES.iter().map(|(n, _)| *n).collect();
            format!("`{name}` is not a health-check method (known: {})", known.join(", "))
        })
    }

    pub fn name(self) -> &'static str {
        Self::NAMES.iter().find(|(_, m)| *m == Some(self)).map_or("?", |(n, _)| n)
    }

    /// The request line's method and whether it speaks HTTP/1.1; `None` for a TCP check.
    pub fn http(self) -> Option<(&'static str, bool)> {
        match self {
            HcMethod::Tcp => None,
            HcMethod::Options => Some(("OPTIONS", false)),
            HcMethod::Head => Some(("HEAD", false)),
            HcMethod::Get => Some(("GET", false)),
            HcMethod::Options11 => Some(("OPTIONS", true)),
            HcMethod::Head11 => Some(("HEAD", true)),
            HcMethod::Get11 => Some(("GET", true)),
        }
    }

    /// Whether the response has a body to look at.
    pub fn has_body(self) -> bool {
        matches!(self, HcMethod::Get | HcMethod::Get11)
    }
}

/// A member's health check, resolved (template, member keys, defaults).
#[derive(Debug, Clone)]
pub struct HealthCheck {
    pub method: HcMethod,
    /// What an HTTP check requests: the member's path followed by `hcuri` (`/` when both are empty).
    pub uri: String,
    pub interval: Duration,
    /// Consecutive passes that bring a member taken out back (`hcpasses`).
    pub passes: u32,
    /// Consecutive failures that take a member out (`hcfails`).
    pub fails: u32,
    pub expect: Arc<HcCondition>,
    /// Where the member's load report is read, if anywhere (`hcload`).
    pub load: Option<LoadSource>,
}

/// Where a check reads the member's load report (`busy=N&ready=M`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadSource {
    /// The body of a GET check's answer.
    Body,
    /// A header of the answer (any HTTP check), by name.
    Header(String),
}

impl std::fmt::Display for LoadSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadSource::Body => write!(f, "body"),
            LoadSource::Header(name) => write!(f, "header:{name}"),
        }
    }
}

/// mod_heartmonitor's report, `busy=N&ready=M` (other `key=value` pairs, such as `v=1`, are
/// ignored; both numbers must be there): (busy, ready).
pub fn parse_load_report(text: &str) -> Option<(u32, u32)> {
    let (mut busy, mut ready) = (None, None);
    for pair in text.trim().split(['&', '\n', ';']) {
        let Some((key, value)) = pair.trim().split_once('=') else { continue };
        match key.trim() {
            "busy" => busy = value.trim().parse().ok(),
            "ready" => ready = value.trim().parse().ok(),
            _ => {}
        }
    }
    Some((busy?, ready?))
}

/// What a check's response must look like (`hcexpr`).
#[derive(Debug)]
pub struct HcCondition {
    /// The `[hcexpr.NAME]` it comes from; empty for the default.
    pub name: String,
    /// Statuses that pass (any of the ranges).
    pub status: Vec<RangeInclusive<u16>>,
    /// A regex the body must match (GET only).
    pub body: Option<regex::Regex>,
    /// A regex the body must not match (GET only).
    pub body_not: Option<regex::Regex>,
}

impl HcCondition {
    /// Without `hcexpr`: a 2xx or 3xx status passes.
    pub fn default_condition() -> Arc<HcCondition> {
        Arc::new(HcCondition { name: String::new(), status: vec![200..=399], body: None, body_not: None })
    }

    pub fn reads_body(&self) -> bool {
        self.body.is_some() || self.body_not.is_some()
    }

    /// `Ok` when a response with `status` and `body` passes, else why not.
    pub fn verdict(&self, status: u16, body: &[u8]) -> Result<(), String> {
        if !self.status.iter().any(|r| r.contains(&status)) {
            return Err(format!("status {status}{}", self.named()));
        }
        let text = String::from_utf8_lossy(body);
        if let Some(re) = &self.body
            && !re.is_match(&text)
        {
            return Err(format!("the body does not match /{}/{}", re.as_str(), self.named()));
        }
        if let Some(re) = &self.body_not
            && re.is_match(&text)
        {
            return Err(format!("the body matches /{}/{}", re.as_str(), self.named()));
        }
        Ok(())
    }

    fn named(&self) -> String {
        if self.name.is_empty() { " (expected 2xx or 3xx)".into() } else { format!(" (hcexpr `{}`)", self.name) }
    }
}

/// The `hc*` keys of a member or a template, as written.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct RawHcParams {
    /// `TCP`, `OPTIONS`, `HEAD`, `GET` (HTTP/1.0), `OPTIONS11`, `HEAD11`, `GET11`, or `NONE`.
    pub hcmethod: Option<Spanned<String>>,
    /// The path checked, after the member's own path.
    pub hcuri: Option<Spanned<String>>,
    /// Seconds between checks, or a duration with Apache's units (`"500ms"`, `"2s"`, `"1mi"`).
    pub hcinterval: Option<Spanned<RawInterval>>,
    /// Passes in a row that bring a member back (default 1).
    pub hcpasses: Option<Spanned<i64>>,
    /// Failures in a row that take a member out (default 1).
    pub hcfails: Option<Spanned<i64>>,
    /// The `[hcexpr.NAME]` a response must satisfy.
    pub hcexpr: Option<Spanned<String>>,
    /// Where the member reports its load: `"body"` (GET checks) or `"header:NAME"`.
    pub hcload: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawInterval {
    Seconds(u64),
    Text(String),
}

/// `[hcexpr.NAME]` as written.
#[derive(Debug, Deserialize)]
pub struct RawHcExpr {
    /// Statuses that pass: codes (`204`) and ranges (`"200-399"`); default 200-399.
    #[serde(default)]
    pub status: Vec<Spanned<RawStatus>>,
    /// A regex the body must match (GET checks only).
    pub body: Option<Spanned<String>>,
    /// A regex the body must not match (GET checks only).
    pub body_not: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawStatus {
    Code(i64),
    Range(String),
}

/// Where a problem is: a span of the file, the key's path, the message.
type Report<'a> = &'a mut dyn FnMut(Range<usize>, String, String);

/// One source's `hc*` values, validated: `None` where not written.
#[derive(Debug, Clone, Default)]
pub struct HcParams {
    /// `Some(None)`: `hcmethod = "NONE"` was written.
    method: Option<Option<HcMethod>>,
    uri: Option<String>,
    interval: Option<Duration>,
    passes: Option<u32>,
    fails: Option<u32>,
    expr: Option<Arc<HcCondition>>,
    load: Option<LoadSource>,
    /// The first key written, for a problem about the whole set.
    first: Option<(Range<usize>, &'static str)>,
}

/// The named conditions and templates, validated.
#[derive(Debug, Default)]
pub struct HcDefinitions {
    conditions: BTreeMap<String, Arc<HcCondition>>,
    templates: BTreeMap<String, HcParams>,
}

impl HcDefinitions {
    /// Validate `[hcexpr.*]`, then `[hctemplate.*]` (which may name conditions).
    pub fn validate(
        exprs: &BTreeMap<String, Spanned<RawHcExpr>>,
        templates: &BTreeMap<String, Spanned<RawHcParams>>,
        report: Report<'_>,
    ) -> HcDefinitions {
        let mut defs = HcDefinitions::default();
        for (name, raw) in exprs {
            if let Some(condition) = condition(name, raw.get_ref(), report) {
                defs.conditions.insert(name.clone(), Arc::new(condition));
            }
        }
        for (name, raw) in templates {
            let params = defs.params(raw.get_ref(), &format!("hctemplate.{name}"), report);
            defs.templates.insert(name.clone(), params);
        }
        defs
    }

    /// A member's check: its `hc*` keys over its template's, over the defaults. `prefix` is the
    /// member's key (`balancer.b.member[0]`); `base_path` the member URL's path.
    pub fn member_check(
        &self,
        raw: &RawHcParams,
        template: Option<&Spanned<String>>,
        prefix: &str,
        base_path: &str,
        report: Report<'_>,
    ) -> Option<HealthCheck> {
        let own = self.params(raw, prefix, report);
        let inherited = match template {
            None => HcParams::default(),
            Some(name) => match self.templates.get(name.get_ref()) {
                Some(t) => t.clone(),
                None => {
                    let known: Vec<_> = self.templates.keys().map(String::as_str).collect();
                    let known = if known.is_empty() { "none".into() } else { known.join(", ") };
                    report(
                        name.span(),
                        format!("{prefix}.hctemplate"),
                        format!("no [hctemplate.{}] (defined: {known})", name.get_ref()),
                    );
                    return None;
                }
            },
        };
        let method = own.method.or(inherited.method);
        let first = own.first.clone().or(inherited.first.clone());
        let Some(Some(method)) = method else {
            if method.is_none()
                && let Some((span, key)) = own.first.clone()
            {
                report(
                    span,
                    format!("{prefix}.{key}"),
                    format!(
                        "`{key}` is set but no `hcmethod` (here or in a template): no health check would run; set \
                         hcmethod (TCP, OPTIONS, HEAD, GET, …)"
                    ),
                );
            }
            return None;
        };
        let expect = own.expr.or(inherited.expr).unwrap_or_else(HcCondition::default_condition);
        if expect.reads_body() && !method.has_body() {
            let (span, key) = first.unwrap_or((0..0, "hcexpr"));
            report(
                span,
                format!("{prefix}.{key}"),
                format!(
                    "hcexpr `{}` looks at the body, which a {} check does not read: use hcmethod GET or GET11",
                    expect.name,
                    method.name()
                ),
            );
            return None;
        }
        let load = own.load.or(inherited.load);
        if load == Some(LoadSource::Body) && !method.has_body() {
            let (span, key) = first.clone().unwrap_or((0..0, "hcload"));
            report(
                span,
                format!("{prefix}.{key}"),
                format!("hcload = \"body\" reads the body, which a {} check does not: use GET or GET11", method.name()),
            );
            return None;
        }
        let uri = own.uri.or(inherited.uri).unwrap_or_default();
        let mut path = base_path.to_string();
        if !uri.is_empty() && !uri.starts_with('/') {
            path.push('/');
        }
        path.push_str(&uri);
        if path.is_empty() {
            path.push('/');
        }
        Some(HealthCheck {
            method,
            uri: path,
            interval: own.interval.or(inherited.interval).unwrap_or(DEFAULT_HC_INTERVAL),
            passes: own.passes.or(inherited.passes).unwrap_or(1),
            fails: own.fails.or(inherited.fails).unwrap_or(1),
            expect,
            load,
        })
    }

    fn params(&self, raw: &RawHcParams, prefix: &str, report: Report<'_>) -> HcParams {
        let key = |k: &str| format!("{prefix}.{k}");
        let mut p = HcParams::default();
        if let Some(m) = &raw.hcmethod {
            written(m.span(), "hcmethod", &mut p);
            match HcMethod::parse(m.get_ref()) {
                Ok(method) => p.method = Some(method),
                Err(why) => report(m.span(), key("hcmethod"), why),
            }
        }
        if let Some(u) = &raw.hcuri {
            written(u.span(), "hcuri", &mut p);
            let uri = u.get_ref().trim();
            if uri.bytes().all(|b| b.is_ascii_graphic()) && !uri.contains('#') {
                p.uri = Some(uri.to_string());
            } else {
                report(u.span(), key("hcuri"), format!("`{uri}` is not a URL path (visible ASCII, no `#`)"));
            }
        }
        if let Some(i) = &raw.hcinterval {
            written(i.span(), "hcinterval", &mut p);
            match interval(i.get_ref()) {
                Ok(d) if d < MIN_HC_INTERVAL => {
                    report(i.span(), key("hcinterval"), format!("{d:?} is shorter than the shortest interval, 100ms"))
                }
                Ok(d) if d > Duration::from_secs(86_400) => {
                    report(i.span(), key("hcinterval"), "more than a day between checks: is this a typo?".into())
                }
                Ok(d) => p.interval = Some(d),
                Err(why) => report(i.span(), key("hcinterval"), why),
            }
        }
        for (value, name, slot) in [(&raw.hcpasses, "hcpasses", &mut p.passes), (&raw.hcfails, "hcfails", &mut p.fails)]
        {
            if let Some(v) = value {
                match u32::try_from(*v.get_ref()) {
                    Ok(n @ 1..=1000) => *slot = Some(n),
                    _ => report(v.span(), key(name), format!("must be 1 to 1000, not {}", v.get_ref())),
                }
            }
        }
        for (value, name) in [(&raw.hcpasses, "hcpasses"), (&raw.hcfails, "hcfails")] {
            if let Some(v) = value {
                written(v.span(), name, &mut p);
            }
        }
        if let Some(l) = &raw.hcload {
            written(l.span(), "hcload", &mut p);
            let text = l.get_ref().trim();
            match text.split_once(':') {
                None if text == "body" => p.load = Some(LoadSource::Body),
                Some(("header", name)) if hyper::header::HeaderName::from_bytes(name.trim().as_bytes()).is_ok() => {
                    p.load = Some(LoadSource::Header(name.trim().to_ascii_lowercase()))
                }
                _ => report(
                    l.span(),
                    key("hcload"),
                    format!("`{text}` is neither \"body\" nor \"header:NAME\" (a header name)"),
                ),
            }
        }
        if let Some(e) = &raw.hcexpr {
            written(e.span(), "hcexpr", &mut p);
            match self.conditions.get(e.get_ref()) {
                Some(c) => p.expr = Some(Arc::clone(c)),
                None => {
                    let known: Vec<_> = self.conditions.keys().map(String::as_str).collect();
                    let known = if known.is_empty() { "none".into() } else { known.join(", ") };
                    report(e.span(), key("hcexpr"), format!("no [hcexpr.{}] (defined: {known})", e.get_ref()));
                }
            }
        }
        p
    }
}

/// Remember the first `hc*` key written (by position), for problems about the whole set.
fn written(span: Range<usize>, name: &'static str, p: &mut HcParams) {
    if p.first.as_ref().is_none_or(|(s, _)| span.start < s.start) {
        p.first = Some((span, name));
    }
}

/// `[hcexpr.NAME]` → a condition, or `None` after reporting what is wrong.
fn condition(name: &str, raw: &RawHcExpr, report: Report<'_>) -> Option<HcCondition> {
    let key = |k: &str| format!("hcexpr.{name}.{k}");
    let mut ok = true;
    let mut status = Vec::new();
    for s in &raw.status {
        match status_range(s.get_ref()) {
            Ok(range) => status.push(range),
            Err(why) => {
                report(s.span(), key("status"), why);
                ok = false;
            }
        }
    }
    if status.is_empty() {
        status.push(200..=399);
    }
    let mut regex = |value: &Option<Spanned<String>>, k: &str| {
        value.as_ref().and_then(|v| match regex::Regex::new(v.get_ref()) {
            Ok(re) => Some(re),
            Err(e) => {
                report(v.span(), key(k), format!("bad regex: {e}"));
                ok = false;
                None
            }
        })
    };
    let body = regex(&raw.body, "body");
    let body_not = regex(&raw.body_not, "body_not");
    ok.then(|| HcCondition { name: name.to_string(), status, body, body_not })
}

/// `204`, `"204"` or `"200-399"`.
fn status_range(raw: &RawStatus) -> Result<RangeInclusive<u16>, String> {
    let code = |text: &str| -> Result<u16, String> {
        match text.trim().parse::<u16>() {
            Ok(c @ 100..=599) => Ok(c),
            _ => Err(format!("`{}` is not an HTTP status (100-599)", text.trim())),
        }
    };
    match raw {
        RawStatus::Code(c) => code(&c.to_string()).map(|c| c..=c),
        RawStatus::Range(text) => match text.split_once('-') {
            Some((low, high)) => {
                let (low, high) = (code(low)?, code(high)?);
                if low > high {
                    return Err(format!("`{text}`: the range is empty ({low} > {high})"));
                }
                Ok(low..=high)
            }
            None => code(text).map(|c| c..=c),
        },
    }
}

/// Seconds, or a number with Apache's time unit (`ms`, `s`, `mi`, `h`).
fn interval(raw: &RawInterval) -> Result<Duration, String> {
    match raw {
        RawInterval::Seconds(s) => Ok(Duration::from_secs(*s)),
        RawInterval::Text(text) => {
            let t = text.trim();
            let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
            let (number, unit) = t.split_at(digits);
            let n: u64 =
                number.parse().map_err(|_| format!("`{text}` is not a duration (like 30, \"500ms\", \"2mi\")"))?;
            match unit.trim() {
                "" | "s" => Ok(Duration::from_secs(n)),
                "ms" => Ok(Duration::from_millis(n)),
                "mi" => Ok(Duration::from_secs(n.saturating_mul(60))),
                "h" => Ok(Duration::from_secs(n.saturating_mul(3600))),
                other => Err(format!("`{other}` is not a time unit (ms, s, mi, h)")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_in_apache_units() {
        let cases: &[(RawInterval, Result<Duration, &str>)] = &[
            (RawInterval::Seconds(30), Ok(Duration::from_secs(30))),
            (RawInterval::Text("500ms".into()), Ok(Duration::from_millis(500))),
            (RawInterval::Text("2mi".into()), Ok(Duration::from_secs(120))),
            (RawInterval::Text("1h".into()), Ok(Duration::from_secs(3600))),
            (RawInterval::Text("7".into()), Ok(Duration::from_secs(7))),
            (RawInterval::Text("5m".into()), Err("`m` is not a time unit")),
            (RawInterval::Text("soon".into()), Err("is not a duration")),
        ];
        for (raw, expected) in cases {
            match (interval(raw), expected) {
                (Ok(d), Ok(e)) => assert_eq!(d, *e, "{raw:?}"),
                (Err(why), Err(e)) => assert!(why.contains(e), "{raw:?}: {why}"),
                (got, _) => panic!("{raw:?}: {got:?}"),
            }
        }
    }

    /// Status, body → verdict of a condition.
    #[test]
    fn conditions_decide_on_status_and_body() {
        let default = HcCondition::default_condition();
        let maintenance = HcCondition {
            name: "up".into(),
            status: vec![200..=200, 204..=204],
            body: Some(regex::Regex::new("ok").unwrap()),
            body_not: Some(regex::Regex::new("(?i)maintenance").unwrap()),
        };
        let cases: &[(&HcCondition, u16, &str, Option<&str>)] = &[
            (&default, 200, "", None),
            (&default, 302, "", None),
            (&default, 404, "", Some("status 404 (expected 2xx or 3xx)")),
            (&default, 500, "", Some("status 500")),
            (&maintenance, 200, "all ok", None),
            (&maintenance, 204, "ok", None),
            (&maintenance, 201, "ok", Some("status 201 (hcexpr `up`)")),
            (&maintenance, 200, "fine", Some("does not match /ok/")),
            (&maintenance, 200, "ok, but under Maintenance", Some("matches /(?i)maintenance/")),
        ];
        for (condition, status, body, expected) in cases {
            let verdict = condition.verdict(*status, body.as_bytes());
            match expected {
                None => assert!(verdict.is_ok(), "{status} {body:?}: {verdict:?}"),
                Some(why) => {
                    assert!(verdict.as_ref().is_err_and(|w| w.contains(why)), "{status} {body:?}: {verdict:?}")
                }
            }
        }
    }

    #[test]
    fn load_reports_as_mod_heartmonitor_writes_them() {
        let cases = [
            ("busy=3&ready=47", Some((3, 47))),
            ("v=1&ready=75&busy=0", Some((0, 75))),
            ("ready=10\nbusy=2\n", Some((2, 10))),
            ("ready=10", None),
            ("busy=x&ready=1", None),
            ("", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_load_report(text), expected, "{text:?}");
        }
    }

    #[test]
    fn status_ranges() {
        assert_eq!(status_range(&RawStatus::Code(204)), Ok(204..=204));
        assert_eq!(status_range(&RawStatus::Range("200-399".into())), Ok(200..=399));
        assert!(status_range(&RawStatus::Range("399-200".into())).unwrap_err().contains("empty"));
        assert!(status_range(&RawStatus::Code(42)).unwrap_err().contains("not an HTTP status"));
    }
}
