//! The two phases: what happens to a request and to its response, in httpd's order.
//!
//! - **Request** (`on_request`; httpd's post-read-request, then fixups): every `SetEnvIf` in file
//!   order, each seeing the environment the previous ones left; then the `RequestHeader` rules, top
//!   level and inside sections, in file order, against the environment after `SetEnvIf`. The
//!   outcome's env actions are what `SetEnvIf` set or unset, in order; its header actions are what
//!   the `RequestHeader` rules did.
//! - **Response** (`on_response`): the `Header` rules in file order, with the environment the host
//!   passes (the request phase's results plus the BALANCER_* variables). `onsuccess` rules (the
//!   default) apply to proxied responses of any status, `always` rules also to responses Fulcrum
//!   generates (docs/apache-behaviour.md §4.5).
//!
//! In both phases the `<If>`/`<ElseIf>` conditions are evaluated first, all at once, against the
//! headers as they arrived (httpd evaluates them before any header rule runs); the rules of the
//! chosen branches then run one after the other on the live header table, so an `edit`, a
//! `%{X}i`/`%{X}o` or an `expr=` condition sees what the rules before it did.
//!
//! Deliberate differences from httpd, chosen for a load balancer whose rules have no per-directory
//! configuration:
//! - httpd evaluates `<If>` once per request, before the response exists, and merges the rules of
//!   the chosen sections *after* the top-level ones; here a section's `Header` rules are chosen
//!   when the response is known (so `resp()` and the BALANCER_* variables are visible) and every
//!   rule keeps its place in the file;
//! - httpd keeps `Header always` rules in a table of their own that it applies before the
//!   `onsuccess` ones; here there is one table and file order.
//!
//! Nothing here can panic on request data: no indexing, checked arithmetic, bounded recursion.

use std::borrow::Cow;

use fulcrum_sdk::rules::{Call, EnvAction, HeaderAction, HeaderOp, Outcome, ResponseOrigin};
use regex::bytes::Regex;

use crate::context::{Ctx, Env, HeaderTable, Request};
use crate::directive::{Action, Assignment, Attribute, Condition, HeaderRule, Item, Matcher, SetEnvIf, Table};
use crate::format::Phase;
use crate::pattern;

/// What httpd reports as `Request_Protocol`.
const PROTOCOL: &str = "HTTP/1.1";

/// The compiled rule set.
#[derive(Debug)]
pub struct Engine {
    setenvif: Vec<SetEnvIf>,
    items: Vec<Item>,
}

impl Engine {
    pub fn new(setenvif: Vec<SetEnvIf>, items: Vec<Item>) -> Self {
        Engine { setenvif, items }
    }

    /// The request phase. Everything is read from `call` (borrowed, not copied); actions name
    /// headers and variables by the handles declared at configure.
    pub fn on_request(&self, call: &Call<'_>) -> Outcome {
        let request = request_of(call);
        let mut env = Env::from_pairs(call.env_vars());
        let mut outcome = Outcome::default();
        let received = HeaderTable::from_lines(call.request_header_lines());
        for rule in &self.setenvif {
            apply_setenvif(rule, &request, &received, &mut env, call, &mut outcome.env);
        }
        let rules = {
            let ctx = Ctx { request, env: &env, request_headers: &received, response_headers: None };
            let mut rules = Vec::new();
            select(&self.items, Phase::Request, &ctx, &mut rules);
            rules
        };
        let mut live = received;
        for rule in rules {
            let ops = {
                let ctx = Ctx { request, env: &env, request_headers: &live, response_headers: None };
                evaluate(rule, &ctx, &live)
            };
            emit(rule, ops, &mut live, call, &mut outcome.headers);
        }
        outcome
    }

    /// The response phase.
    pub fn on_response(&self, call: &Call<'_>) -> Outcome {
        let request = request_of(call);
        let env = Env::from_pairs(call.env_vars());
        let mut outcome = Outcome::default();
        let request_headers = HeaderTable::from_lines(call.request_header_lines());
        let mut live = HeaderTable::from_lines(call.response_header_lines());
        let proxied = matches!(call.origin(), Some(ResponseOrigin::Proxied));
        let rules = {
            let ctx = Ctx { request, env: &env, request_headers: &request_headers, response_headers: Some(&live) };
            let mut rules = Vec::new();
            select(&self.items, Phase::Response, &ctx, &mut rules);
            rules
        };
        for rule in rules {
            if !proxied && rule.table != (Table::Response { always: true }) {
                continue;
            }
            let ops = {
                let ctx = Ctx { request, env: &env, request_headers: &request_headers, response_headers: Some(&live) };
                evaluate(rule, &ctx, &live)
            };
            emit(rule, ops, &mut live, call, &mut outcome.headers);
        }
        outcome
    }
}

/// The request fields and the clock of a call.
fn request_of<'a>(call: &Call<'a>) -> Request<'a> {
    Request {
        method: call.method(),
        path: call.path(),
        query: call.query(),
        client_addr: call.client_addr(),
        host: call.host(),
        start_us: call.request_start_us(),
        now_us: call.now_us(),
    }
}

/// The rules of `phase` that apply, in file order: every top-level rule, and the rules of the
/// first branch of each chain whose condition holds. Recursion is bounded by the nesting limit.
fn select<'r>(items: &'r [Item], phase: Phase, ctx: &Ctx<'_>, out: &mut Vec<&'r HeaderRule>) {
    for item in items {
        match item {
            Item::Rule(rule) if rule.table.phase() == phase => out.push(rule),
            Item::Rule(_) => {}
            Item::Chain(chain) if chain.has(phase) => {
                let chosen = chain.branches.iter().find(|b| b.condition.as_ref().is_none_or(|c| c.eval(ctx)));
                if let Some(branch) = chosen {
                    select(&branch.items, phase, ctx, out);
                }
            }
            Item::Chain(_) => {}
        }
    }
}

/// mod_setenvif's `match_headers` for one rule.
fn apply_setenvif(
    rule: &SetEnvIf,
    request: &Request<'_>,
    received: &HeaderTable<'_>,
    env: &mut Env<'_>,
    call: &Call<'_>,
    actions: &mut Vec<EnvAction>,
) {
    let subject: Option<Cow<'_, str>> = match &rule.attribute {
        Attribute::RemoteHost | Attribute::RemoteAddr => Some(Cow::Borrowed(request.client_addr)),
        // Fulcrum does not tell rules the local address: httpd's lookup found nothing either.
        Attribute::ServerAddr => None,
        Attribute::RequestMethod => Some(Cow::Borrowed(request.method)),
        Attribute::RequestProtocol => Some(Cow::Borrowed(PROTOCOL)),
        Attribute::RequestUri => Some(Cow::Borrowed(request.path)),
        Attribute::Header(name) => received.joined(name).or_else(|| env.get(name).map(str::to_string)).map(Cow::Owned),
    };
    let Some(subject) = subject else { return };
    let captures = match &rule.matcher {
        Matcher::Regex(regex) => match regex.captures(subject.as_bytes()) {
            Some(captures) => Some(captures),
            None => return,
        },
        Matcher::Substring(text) if subject.contains(text.as_str()) => None,
        Matcher::Substring(_) => return,
    };
    for assignment in &rule.assignments {
        match assignment {
            Assignment::Unset(name) => {
                env.unset(name);
                actions.push(EnvAction { var: call.env_var(name).0, value: None });
            }
            Assignment::Set { name, value } => {
                let value = match &captures {
                    Some(captures) => pattern::pregsub(value, captures),
                    None => value.clone(),
                };
                env.set(name, &value);
                actions.push(EnvAction { var: call.env_var(name).0, value: Some(value) });
            }
        }
    }
}

/// The actions one rule takes, given the live header table it applies to.
fn evaluate(rule: &HeaderRule, ctx: &Ctx<'_>, live: &HeaderTable<'_>) -> Vec<(HeaderOp, String)> {
    let applies = match &rule.condition {
        Condition::Always => true,
        Condition::Env { name, set } => ctx.env.get(name).is_some() == *set,
        Condition::Expr(expr) => expr.eval(ctx),
    };
    if !applies {
        return Vec::new();
    }
    match &rule.action {
        Action::Op(op, format) => vec![(*op, format.render(ctx))],
        Action::Unset => vec![(HeaderOp::Unset, String::new())],
        Action::Edit { regex, replacement, all } => {
            let before: Vec<&str> = live.values(&rule.name).collect();
            let template = replacement.render(ctx);
            let after: Vec<String> = before.iter().map(|value| edit(regex, &template, value, *all)).collect();
            if after.iter().zip(&before).all(|(a, b)| a == b) {
                return Vec::new(); // absent, or no line changed
            }
            // One line: `set`. Several: `set` the first, `add` the others, keeping every line.
            after
                .into_iter()
                .enumerate()
                .map(|(i, value)| (if i == 0 { HeaderOp::Set } else { HeaderOp::Add }, value))
                .collect()
        }
    }
}

/// mod_headers' `process_regexp`: replace the first match (`edit`) or every match (`edit*`) of
/// `regex` in `value` with `template` after `$N` substitution. Like httpd, `edit*` searches the
/// rest of the value afresh after each match (so `^` matches again there); after an empty match it
/// stops (stock httpd would recurse forever; this is the fix proposed upstream).
fn edit(regex: &Regex, template: &str, value: &str, all: bool) -> String {
    let mut out: Vec<u8> = Vec::with_capacity(value.len());
    let mut rest = value.as_bytes();
    loop {
        let Some((start, end, substitution)) = regex
            .captures(rest)
            .and_then(|c| c.get(0).map(|m| (m.start(), m.end(), pattern::pregsub_bytes(template, &c))))
        else {
            out.extend_from_slice(rest);
            break;
        };
        out.extend_from_slice(rest.get(..start).unwrap_or_default());
        out.extend_from_slice(&substitution);
        let after = rest.get(end..).unwrap_or_default();
        if !all || start == end {
            out.extend_from_slice(after);
            break;
        }
        rest = after;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Record the actions in the outcome and apply them to the live table.
fn emit(
    rule: &HeaderRule,
    ops: Vec<(HeaderOp, String)>,
    live: &mut HeaderTable<'_>,
    call: &Call<'_>,
    out: &mut Vec<HeaderAction>,
) {
    if ops.is_empty() {
        return;
    }
    let target = call.target(&rule.name).0;
    for (op, value) in ops {
        live.apply(op, &rule.name, &value);
        out.push(HeaderAction { op, target, value });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_replaces_like_process_regexp() {
        let cases: &[(&str, &str, &str, bool, &str)] = &[
            ("a", "X", "banana", false, "bXnana"),
            ("a", "X", "banana", true, "bXnXnX"),
            ("(an)", "<$1>", "banana", true, "b<an><an>a"),
            ("^a", "X", "aaa", true, "XXX"), // each search starts afresh, as in httpd
            ("^a", "X", "aaa", false, "Xaa"),
            ("x*", "-", "ab", true, "-ab"), // an empty match stops edit*
            ("z", "X", "abc", true, "abc"),
            ("b", "", "abcb", true, "ac"),
            (r"\d+", r"\$0=$0", "a1b22", true, "a$0=1b$0=22"),
        ];
        for (pattern, template, value, all, expected) in cases {
            let regex = pattern::compile(pattern, false).unwrap();
            assert_eq!(edit(&regex, template, value, *all), *expected, "{pattern} {value} all={all}");
        }
    }
}
