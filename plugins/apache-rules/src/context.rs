//! What a rule can read while it runs: the request, the environment, and the headers as the
//! earlier rules of the same phase left them.
//!
//! httpd applies mod_headers rules one after the other to its live header table, so a later rule
//! (an `edit`, a `%{X}i`, a `req('X')` in `expr=`) sees what an earlier one set. The plugin only
//! answers actions for the host to apply, so it keeps a [`HeaderTable`] of the headers it declared
//! and applies its own actions to it as it emits them, exactly as the host applies them (the
//! `header-op` docs in `wit/rules.wit`, and the host's `apply_headers`): `append`, `merge` and
//! `set-if-empty` look at all lines of the header joined with `, ` and leave one line.
//!
//! Names are compared without regard to ASCII case everywhere, as httpd's tables do (environment
//! variable names included: `env('forward_ip')` finds `FORWARD_IP`).
//!
//! Everything borrows from the call's inputs block (`fulcrum_sdk::rules::Call`) where it can:
//! only what the rules change is copied.

use std::borrow::Cow;

use fulcrum_sdk::rules::{Call, EnvAction, EnvVar, HeaderOp};

/// The environment entries the 0.1.0 host passed the clock in (microseconds since the Unix
/// epoch); [`crate::testing`] still reads them from a test's env list.
pub const REQUEST_START_US: &str = "FULCRUM_REQUEST_START_US";
pub const NOW_US: &str = "FULCRUM_NOW_US";

/// The request fields and the clock, borrowed from the call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub client_addr: &'a str,
    pub host: &'a str,
    /// When the request was received, microseconds since the Unix epoch (`%t`).
    pub start_us: u64,
    /// Now, likewise (`%D` is the difference).
    pub now_us: u64,
}

/// The per-request environment (httpd's `r->subprocess_env`).
///
/// Either a table of (name, value) pairs ([`Env::new`], [`Env::from_pairs`]; tests and tools), or
/// a call's declared variables with the env actions taken so far applied on top ([`Env::of_call`]:
/// what the engine uses, which copies nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env<'a>(Source<'a>);

/// Where an [`Env`]'s variables are: its own table, or a call's (read-only). One or the other, so
/// that the engine's environment of a call has no table to make or drop.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source<'a> {
    Pairs(Vec<(Cow<'a, str>, Cow<'a, str>)>),
    Call(CallEnv<'a>),
}

impl Default for Env<'_> {
    fn default() -> Self {
        Env(Source::Pairs(Vec::new()))
    }
}

/// A call's variables and the actions taken on them so far.
#[derive(Debug, Clone, Copy)]
struct CallEnv<'a> {
    call: Call<'a>,
    actions: &'a [EnvAction],
}

impl<'a> CallEnv<'a> {
    /// Variable `var` after the actions taken so far (the last action on it wins).
    fn value(&self, var: EnvVar) -> Option<&'a str> {
        match self.actions.iter().rev().find(|a| a.var == var.0) {
            Some(action) => action.value.as_deref(),
            None => self.call.env_at(var),
        }
    }
}

/// A variable the rules name (`%{X}e`, `env=X`, `env('X')`, `%{HTTPS}`), and, once the rules have
/// declared what they read ([`EnvRef::declare`]), its slot among the call's variables.
///
/// The declared list is fixed when the rules are configured, and a rule set is only ever called
/// with the layout made from its own declarations; so a read goes straight to the slot instead of
/// comparing the name with every declared one, without regard to case, on every request.
#[derive(Debug, Clone)]
pub struct EnvRef {
    name: String,
    var: Option<EnvVar>,
}

impl EnvRef {
    pub fn new(name: impl Into<String>) -> Self {
        EnvRef { name: name.into(), var: None }
    }

    /// Declare the variable as read, and keep its slot.
    pub fn declare(&mut self, reads: &mut crate::needs::Reads) {
        self.var = Some(reads.env(&self.name));
    }
}

/// Two references are equal when they name the same variable: the slot follows from the name.
impl PartialEq for EnvRef {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for EnvRef {}

impl PartialEq for CallEnv<'_> {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self.call.layout(), other.call.layout()) && std::ptr::eq(self.actions, other.actions)
    }
}

impl Eq for CallEnv<'_> {}

impl<'a> Env<'a> {
    pub fn new(vars: &'a [(String, String)]) -> Self {
        Env(Source::Pairs(vars.iter().map(|(n, v)| (Cow::Borrowed(n.as_str()), Cow::Borrowed(v.as_str()))).collect()))
    }

    /// From borrowed (name, value) pairs, without copying them.
    pub fn from_pairs(vars: impl Iterator<Item = (&'a str, &'a str)>) -> Self {
        Env(Source::Pairs(vars.map(|(n, v)| (Cow::Borrowed(n), Cow::Borrowed(v))).collect()))
    }

    /// The variables `call` carries after `actions` (in order: a set replaces, an unset removes).
    /// Read-only: [`Env::set`] and [`Env::unset`] do nothing to it.
    pub fn of_call(call: Call<'a>, actions: &'a [EnvAction]) -> Self {
        Env(Source::Call(CallEnv { call, actions }))
    }

    /// The first variable of that name (`apr_table_get`).
    pub fn get(&self, name: &str) -> Option<&str> {
        match &self.0 {
            Source::Call(call) => {
                let var = call.call.layout().needs().env_vars().iter().position(|n| n.eq_ignore_ascii_case(name))?;
                call.value(EnvVar(u32::try_from(var).ok()?))
            }
            Source::Pairs(vars) => vars.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| &**v),
        }
    }

    /// A variable the rules named: straight from its slot when it has one (a call's variables),
    /// else by name, as [`Env::get`].
    pub fn get_ref(&self, var: &EnvRef) -> Option<&str> {
        match (&self.0, var.var) {
            (Source::Call(call), Some(slot)) => call.value(slot),
            _ => self.get(&var.name),
        }
    }

    /// `apr_table_set`: replace the first entry's value and drop the others, or append.
    pub fn set(&mut self, name: &str, value: &str) {
        let Source::Pairs(vars) = &mut self.0 else { return };
        let mut found = false;
        vars.retain_mut(|(n, v)| {
            if !n.eq_ignore_ascii_case(name) {
                return true;
            }
            if found {
                return false;
            }
            found = true;
            *v = Cow::Owned(value.to_string());
            true
        });
        if !found {
            vars.push((Cow::Owned(name.to_string()), Cow::Owned(value.to_string())));
        }
    }

    pub fn unset(&mut self, name: &str) {
        if let Source::Pairs(vars) = &mut self.0 {
            vars.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        }
    }

    /// A microsecond timestamp kept as a variable; 0 when it is not a number.
    pub fn micros(&self, name: &str) -> u64 {
        self.get(name).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
    }
}

/// Header lines in order, names in lower case (a header sent twice is two entries).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderTable<'a> {
    entries: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

/// The table of a phase whose rules read no header: shared, so that no call makes or drops one.
static NO_HEADERS: HeaderTable<'static> = HeaderTable { entries: Vec::new() };

impl HeaderTable<'static> {
    /// An empty table, for rules that read no header.
    pub fn none() -> &'static HeaderTable<'static> {
        &NO_HEADERS
    }
}

impl<'a> HeaderTable<'a> {
    pub fn new(headers: &'a [(String, String)]) -> Self {
        HeaderTable {
            entries: headers
                .iter()
                .map(|(n, v)| {
                    let name = if n.bytes().any(|b| b.is_ascii_uppercase()) {
                        Cow::Owned(n.to_ascii_lowercase())
                    } else {
                        Cow::Borrowed(n.as_str())
                    };
                    (name, Cow::Borrowed(v.as_str()))
                })
                .collect(),
        }
    }

    /// From borrowed lines whose names are already in lower case, without copying them.
    pub fn from_lines(lines: impl Iterator<Item = (&'a str, &'a str)>) -> Self {
        HeaderTable { entries: lines.map(|(n, v)| (Cow::Borrowed(n), Cow::Borrowed(v))).collect() }
    }

    /// The same table, owning its text.
    pub fn into_owned(self) -> HeaderTable<'static> {
        HeaderTable {
            entries: self
                .entries
                .into_iter()
                .map(|(n, v)| (Cow::Owned(n.into_owned()), Cow::Owned(v.into_owned())))
                .collect(),
        }
    }

    /// Every value of `name`, in order.
    pub fn values<'s>(&'s self, name: &str) -> impl Iterator<Item = &'s str> {
        self.entries.iter().filter(move |(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| &**v)
    }

    /// The first value (`apr_table_get`).
    pub fn first(&self, name: &str) -> Option<&str> {
        self.values(name).next()
    }

    /// [`HeaderTable::joined`], borrowed when the header has one line.
    pub fn joined_cow(&self, name: &str) -> Option<Cow<'_, str>> {
        let mut values = self.values(name);
        let first = values.next()?;
        match values.next() {
            None => Some(Cow::Borrowed(first)),
            Some(second) => {
                let mut joined = format!("{first}, {second}");
                for v in values {
                    joined.push_str(", ");
                    joined.push_str(v);
                }
                Some(Cow::Owned(joined))
            }
        }
    }

    /// All values joined with `", "`, as httpd merges repeated request headers when it reads them.
    pub fn joined(&self, name: &str) -> Option<String> {
        let mut values = self.values(name);
        let first = values.next()?;
        Some(values.fold(first.to_string(), |mut acc, v| {
            acc.push_str(", ");
            acc.push_str(v);
            acc
        }))
    }

    /// Apply one action as the host will.
    pub fn apply(&mut self, op: HeaderOp, name: &str, value: &str) {
        let name = name.to_ascii_lowercase();
        let current = self.joined(&name).filter(|c| !c.is_empty());
        match (op, current) {
            (HeaderOp::Set, _) | (HeaderOp::SetIfEmpty | HeaderOp::Append | HeaderOp::Merge, None) => {
                self.set(&name, value)
            }
            (HeaderOp::SetIfEmpty, Some(_)) => {}
            (HeaderOp::Add, _) => self.entries.push((Cow::Owned(name), Cow::Owned(value.to_string()))),
            (HeaderOp::Unset, _) => self.entries.retain(|(n, _)| **n != *name),
            (HeaderOp::Merge, Some(current)) if has_token(&current, value) => {}
            (HeaderOp::Append | HeaderOp::Merge, Some(current)) => self.set(&name, &format!("{current}, {value}")),
        }
    }

    fn set(&mut self, name: &str, value: &str) {
        let mut found = false;
        self.entries.retain_mut(|(n, v)| {
            if **n != *name {
                return true;
            }
            if found {
                return false;
            }
            found = true;
            *v = Cow::Owned(value.to_string());
            true
        });
        if !found {
            self.entries.push((Cow::Owned(name.to_string()), Cow::Owned(value.to_string())));
        }
    }
}

/// The host's `merge` test: is `token` one of the comma-separated tokens of `value`, both compared
/// without surrounding white space? (httpd compares exactly, minds double quotes, and looks at the
/// first line only; what matters here is predicting the host.)
pub fn has_token(value: &str, token: &str) -> bool {
    value.split(',').any(|t| t.trim() == token.trim())
}

/// Everything an expression or a format string may read.
pub struct Ctx<'a> {
    pub request: Request<'a>,
    pub env: &'a Env<'a>,
    /// The request headers: live during the request phase, as received during the response phase.
    pub request_headers: &'a HeaderTable<'a>,
    /// The response headers, live; `None` during the request phase (`resp()` is empty then).
    pub response_headers: Option<&'a HeaderTable<'a>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(lines: &[(&str, &str)]) -> HeaderTable<'static> {
        let owned: Vec<(String, String)> = lines.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
        HeaderTable::new(&owned).into_owned()
    }

    #[test]
    fn header_ops_change_the_table_as_the_host_does() {
        use HeaderOp::*;
        type Lines<'a> = &'a [(&'a str, &'a str)];
        let start = [("a", "1"), ("x", "p"), ("b", "2"), ("X", "q")];
        let cases: &[(HeaderOp, &str, Lines)] = &[
            (Set, "v", &[("a", "1"), ("x", "v"), ("b", "2")]),
            (Add, "v", &[("a", "1"), ("x", "p"), ("b", "2"), ("x", "q"), ("x", "v")]),
            (Append, "v", &[("a", "1"), ("x", "p, q, v"), ("b", "2")]),
            (Unset, "", &[("a", "1"), ("b", "2")]),
            (Merge, "q", &[("a", "1"), ("x", "p"), ("b", "2"), ("x", "q")]),
            (Merge, " p ", &[("a", "1"), ("x", "p"), ("b", "2"), ("x", "q")]),
            (Merge, "v", &[("a", "1"), ("x", "p, q, v"), ("b", "2")]),
            (SetIfEmpty, "v", &[("a", "1"), ("x", "p"), ("b", "2"), ("x", "q")]),
        ];
        for (op, value, expected) in cases {
            let mut t = table(&start);
            t.apply(*op, "X", value);
            assert_eq!(t, table(expected), "{op:?} {value}");
        }
        for op in [SetIfEmpty, Append, Merge] {
            let mut t = table(&[("x", "")]);
            t.apply(op, "X", "v");
            assert_eq!(t, table(&[("x", "v")]), "{op:?} on an empty value");
        }
        let mut t = table(&[]);
        for op in [Set, Add, Append, Merge, SetIfEmpty] {
            t.apply(op, "Y", "v");
            assert_eq!(t.joined("y").as_deref(), Some("v"), "{op:?}");
            t.apply(Unset, "y", "");
        }
    }

    #[test]
    fn merge_tokens_follow_the_host() {
        let cases: &[(&str, &str, bool)] =
            &[("a, b", "b", true), ("a,b", "a", true), ("a , b", "a", true), ("A", "a", false), ("ab", "a", false)];
        for (value, token, expected) in cases {
            assert_eq!(has_token(value, token), *expected, "{value:?} has {token:?}");
        }
    }

    #[test]
    fn env_names_ignore_case_like_apr_tables() {
        let start = [("Forward_IP".into(), "1".into()), ("other".into(), "2".into())];
        let mut env = Env::new(&start);
        assert_eq!(env.get("FORWARD_IP"), Some("1"));
        env.set("forward_ip", "3");
        let after = [("Forward_IP".into(), "3".into()), ("other".into(), "2".into())];
        assert_eq!(env, Env::new(&after));
        env.set("new", "4");
        env.unset("OTHER");
        let last = [("Forward_IP".into(), "3".into()), ("new".into(), "4".into())];
        assert_eq!(env, Env::new(&last));
        assert_eq!(env.micros("new"), 4);
        assert_eq!(env.micros("missing"), 0);
    }
}
