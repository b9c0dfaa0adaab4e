//! The rules seam: header and environment rules (Apache's mod_setenvif and mod_headers), in
//! native terms, and the native application of their answers.
//!
//! A rules plugin never touches a request: it answers with declarative actions, which this module
//! checks (header names and values must be valid) and applies in order. The plugin module
//! implements [`RequestRules`] with WebAssembly components.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use smallvec::SmallVec;

use crate::request::{RequestFields, RequestInfo};

/// What a rules plugin reads, declared once at configure time.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RulesNeeds {
    pub fields: RequestFields,
    pub request_headers: Vec<HeaderName>,
    pub response_headers: Vec<HeaderName>,
    /// The environment variables the rules read or set (any case), or `None` when they see the
    /// whole environment (plugins built against `fulcrum:plugin@0.1.0`).
    pub env: Option<Vec<Arc<str>>>,
}

impl RulesNeeds {
    /// Do the rules read (or set) variable `name`? Without regard to ASCII case, as they look it up.
    pub fn reads_env(&self, name: &str) -> bool {
        self.env.as_ref().is_none_or(|vars| vars.iter().any(|v| v.eq_ignore_ascii_case(name)))
    }
}

/// Times a rules call gets for Apache's `%t` and `%D`: microseconds since the Unix epoch.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    /// When the request was received.
    pub request_start_us: u64,
    /// When the call is made.
    pub now_us: u64,
}

/// How a header action changes a header (see `wit/rules.wit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderOp {
    Set,
    Append,
    Add,
    Unset,
    Merge,
    SetIfEmpty,
}

/// One header change, checked by the plugin module: the name parsed (once, at configure), the
/// value a valid header value (it may share its bytes with the other values of the same answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderAction {
    pub op: HeaderOp,
    pub name: HeaderName,
    pub value: HeaderValue,
}

/// The header actions of one answer: a few, kept inline (an answer then allocates nothing for
/// them; the guide's rules answer one per request call and three per response call).
pub type HeaderActions = SmallVec<[HeaderAction; 4]>;

/// A rules call's answer: env changes (`None` unsets), then header actions, in order, and the
/// actions the plugin module refused (an unknown index, an invalid header name or value), in
/// words.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RulesOutcome {
    pub env: Vec<(Arc<str>, Option<String>)>,
    pub headers: HeaderActions,
    pub refused: Vec<String>,
}

/// Whether every byte of `bytes` may stand in a header value (RFC 9110 §5.5: tab, 0x20-0x7E and
/// obs-text 0x80-0xFF; exactly what [`HeaderValue::from_bytes`] accepts). Eight bytes at a time:
/// a rules answer's values are checked in one pass, and then each value is taken as it is.
pub fn header_value_bytes_ok(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let mut words = bytes.chunks_exact(8);
    for chunk in &mut words {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_le_bytes(word);
        // Some byte below 0x20 (a control, or a tab) or equal to 0x7F: look at each.
        let below_space = word.wrapping_sub(ONES * 0x20) & !word & HIGHS;
        let del = (word ^ (ONES * 0x7f)).wrapping_sub(ONES) & !(word ^ (ONES * 0x7f)) & HIGHS;
        if (below_space | del) != 0 && !chunk.iter().all(|&b| header_value_byte_ok(b)) {
            return false;
        }
    }
    words.remainder().iter().all(|&b| header_value_byte_ok(b))
}

fn header_value_byte_ok(b: u8) -> bool {
    b >= 0x20 && b != 0x7f || b == b'\t'
}

/// Who produced a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A member's response, relayed.
    Proxied,
    /// Fulcrum's own (an error page).
    Generated,
}

/// The response as a rules plugin may see it.
#[derive(Debug, Clone, Copy)]
pub struct ResponseInfo<'a> {
    pub status: u16,
    pub origin: Origin,
    pub headers: &'a HeaderMap,
}

/// A rules call that produced no answer. The request carries on without the rules' actions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulesFault {
    pub plugin: String,
    pub detail: String,
}

impl fmt::Display for RulesFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rules plugin `{}` failed: {}", self.plugin, self.detail)
    }
}

/// A configured rule set. Calls may come from many requests at once.
///
/// The request path uses the `_into` calls, which write the answer into an outcome it owns (an
/// outcome holds its first header actions inline, and is not moved from frame to frame); the
/// others return it, for tests and tools.
pub trait RequestRules: Send + Sync {
    fn name(&self) -> &str;
    fn needs(&self) -> &RulesNeeds;
    /// The request phase, its answer added to `out`.
    fn on_request_into(
        &self,
        request: &RequestInfo<'_>,
        env: &Env,
        clock: Clock,
        out: &mut RulesOutcome,
    ) -> Result<(), RulesFault>;
    /// The response phase, its answer added to `out`.
    fn on_response_into(
        &self,
        request: &RequestInfo<'_>,
        response: &ResponseInfo<'_>,
        env: &Env,
        clock: Clock,
        out: &mut RulesOutcome,
    ) -> Result<(), RulesFault>;

    fn on_request(&self, request: &RequestInfo<'_>, env: &Env, clock: Clock) -> Result<RulesOutcome, RulesFault> {
        let mut out = RulesOutcome::default();
        self.on_request_into(request, env, clock, &mut out).map(|()| out)
    }

    fn on_response(
        &self,
        request: &RequestInfo<'_>,
        response: &ResponseInfo<'_>,
        env: &Env,
        clock: Clock,
    ) -> Result<RulesOutcome, RulesFault> {
        let mut out = RulesOutcome::default();
        self.on_response_into(request, response, env, clock, &mut out).map(|()| out)
    }
}

/// Builds rule sets from a plugin name and its configuration table (the plugin registry does).
pub trait RulesFactory {
    fn rules(&self, plugin: &str, config: &toml::Table) -> Result<Box<dyn RequestRules>, RulesSetupError>;
}

/// Why a rule set could not be configured. `option` and `line` point into the plugin's
/// configuration when the plugin said where (`line N:` inside a multi-line option).
#[derive(Debug, Clone)]
pub struct RulesSetupError {
    pub option: Option<String>,
    pub line: Option<usize>,
    pub message: String,
}

/// An env variable's name or value: borrowed from the program or shared with the configuration
/// where it can be, so that the BALANCER_* variables of a request cost no allocation.
#[derive(Debug, Clone)]
pub enum EnvText {
    Static(&'static str),
    Shared(Arc<str>),
    Owned(String),
}

impl std::ops::Deref for EnvText {
    type Target = str;

    fn deref(&self) -> &str {
        match self {
            EnvText::Static(s) => s,
            EnvText::Shared(s) => s,
            EnvText::Owned(s) => s,
        }
    }
}

impl PartialEq for EnvText {
    fn eq(&self, other: &EnvText) -> bool {
        **self == **other
    }
}

impl Eq for EnvText {}

impl From<&'static str> for EnvText {
    fn from(s: &'static str) -> EnvText {
        EnvText::Static(s)
    }
}

impl From<Arc<str>> for EnvText {
    fn from(s: Arc<str>) -> EnvText {
        EnvText::Shared(s)
    }
}

impl From<&Arc<str>> for EnvText {
    fn from(s: &Arc<str>) -> EnvText {
        EnvText::Shared(Arc::clone(s))
    }
}

impl From<String> for EnvText {
    fn from(s: String) -> EnvText {
        EnvText::Owned(s)
    }
}

/// The per-request environment (Apache's `subprocess_env`): names are case-sensitive, set
/// variables exist even when empty.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Env {
    vars: Vec<(EnvText, EnvText)>,
}

impl Env {
    /// An environment with room for `n` variables before it allocates again.
    pub fn with_capacity(n: usize) -> Env {
        Env { vars: Vec::with_capacity(n) }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.iter().find(|(k, _)| **k == *name).map(|(_, v)| &**v)
    }

    pub fn set(&mut self, name: impl Into<EnvText>, value: impl Into<EnvText>) {
        let (name, value) = (name.into(), value.into());
        match self.vars.iter_mut().find(|(k, _)| *k == name) {
            Some(slot) => slot.1 = value,
            None => self.vars.push((name, value)),
        }
    }

    pub fn unset(&mut self, name: &str) {
        self.vars.retain(|(k, _)| **k != *name);
    }

    pub fn vars(&self) -> impl Iterator<Item = (&str, &str)> {
        self.vars.iter().map(|(k, v)| (&**k, &**v))
    }

    /// The first variable named `name` without regard to ASCII case (how rules look names up,
    /// as Apache's tables do).
    pub fn get_ignore_case(&self, name: &str) -> Option<&str> {
        self.vars.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| &**v)
    }

    /// Apply a rules outcome's env actions in order.
    pub fn apply(&mut self, actions: impl IntoIterator<Item = (Arc<str>, Option<String>)>) {
        for (name, value) in actions {
            match value {
                Some(v) => self.set(name, v),
                None => self.unset(&name),
            }
        }
    }
}

/// Apply header actions in order. Their values are valid header values, and two of them joined
/// with `, ` are one too, so every action applies: a plugin cannot produce a malformed message.
pub fn apply_headers(headers: &mut HeaderMap, actions: impl IntoIterator<Item = HeaderAction>) {
    for action in actions {
        let name = action.name;
        if action.op == HeaderOp::Unset {
            headers.remove(&name);
            continue;
        }
        let current = match action.op {
            HeaderOp::Set | HeaderOp::Add => None,
            _ => joined(headers, &name),
        };
        let text = || String::from_utf8_lossy(action.value.as_bytes());
        let value = match action.op {
            HeaderOp::Set | HeaderOp::Add => action.value,
            HeaderOp::SetIfEmpty if current.as_deref().is_some_and(|c| !c.is_empty()) => continue,
            HeaderOp::SetIfEmpty => action.value,
            HeaderOp::Append => match current {
                Some(c) if !c.is_empty() => match combined(&c, &text()) {
                    Some(value) => value,
                    None => continue,
                },
                _ => action.value,
            },
            HeaderOp::Merge => match current {
                Some(c) if c.split(',').any(|t| t.trim() == text().trim()) => continue,
                Some(c) if !c.is_empty() => match combined(&c, &text()) {
                    Some(value) => value,
                    None => continue,
                },
                _ => action.value,
            },
            HeaderOp::Unset => unreachable!("handled above"),
        };
        if action.op == HeaderOp::Add {
            headers.append(name, value);
        } else {
            headers.insert(name, value);
        }
    }
}

/// `current, added` as one value. Both are header values (or their text with U+FFFD for bytes
/// that are not UTF-8, which is valid too), so the result is one: checked anyway, never trusted
/// (`None` would leave the header as it was).
fn combined(current: &str, added: &str) -> Option<HeaderValue> {
    HeaderValue::from_maybe_shared(Bytes::from(format!("{current}, {added}"))).ok()
}

fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    let mut out = String::from_utf8_lossy(first.as_bytes()).into_owned();
    for v in values {
        out.push_str(", ");
        out.push_str(&String::from_utf8_lossy(v.as_bytes()));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(op: HeaderOp, name: &str, value: &str) -> HeaderAction {
        HeaderAction {
            op,
            name: HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()).unwrap(),
            value: HeaderValue::from_str(value).unwrap(),
        }
    }

    /// Headers before, one action, headers after (values in order, repeated lines separate).
    #[test]
    fn header_ops() {
        use HeaderOp::*;
        /// Header lines before, the action, the values after.
        type Case = (&'static [(&'static str, &'static str)], HeaderAction, &'static [&'static str]);
        let cases: &[Case] = &[
            (&[], action(Set, "X-A", "1"), &["1"]),
            (&[("x-a", "0"), ("x-a", "9")], action(Set, "X-A", "1"), &["1"]),
            (&[("x-a", "0")], action(Add, "X-A", "1"), &["0", "1"]),
            (&[("x-a", "0")], action(Append, "X-A", "1"), &["0, 1"]),
            (&[], action(Append, "X-A", "1"), &["1"]),
            (&[("x-a", "0, 1")], action(Merge, "X-A", "1"), &["0, 1"]),
            (&[("x-a", "0")], action(Merge, "X-A", "1"), &["0, 1"]),
            (&[("x-a", "0")], action(SetIfEmpty, "X-A", "1"), &["0"]),
            (&[("x-a", "")], action(SetIfEmpty, "X-A", "1"), &["1"]),
            (&[("x-a", "0")], action(Unset, "X-A", ""), &[]),
        ];
        for (before, action, after) in cases {
            let mut h = HeaderMap::new();
            for (k, v) in *before {
                h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
            }
            apply_headers(&mut h, [action.clone()]);
            let got: Vec<_> = h.get_all("x-a").iter().map(|v| v.to_str().unwrap()).collect();
            assert_eq!(got, *after, "{before:?} + {action:?}");
        }
    }

    /// The one-pass check accepts exactly the bytes `HeaderValue` does, wherever they stand in
    /// the eight-byte words.
    #[test]
    fn header_value_bytes_are_checked_as_header_value_checks_them() {
        for b in 0..=255u8 {
            for at in [0, 5, 7, 8, 13, 16] {
                let mut bytes = vec![b'a'; 17];
                bytes[at] = b;
                let want = HeaderValue::from_bytes(&bytes).is_ok();
                assert_eq!(header_value_bytes_ok(&bytes), want, "byte {b:#04x} at {at}");
                assert_eq!(header_value_bytes_ok(&bytes[..=at]), want, "byte {b:#04x} last of {}", at + 1);
            }
        }
        assert!(header_value_bytes_ok(b""));
        assert!(header_value_bytes_ok("tab\there, obs-text \u{e9}".as_bytes()));
    }

    #[test]
    fn env_set_unset_exists_when_empty() {
        let mut env = Env::default();
        env.apply(vec![("A".into(), Some("".into())), ("B".into(), Some("2".into())), ("B".into(), None)]);
        assert_eq!(env.get("A"), Some(""));
        assert_eq!(env.get("B"), None);
    }
}
