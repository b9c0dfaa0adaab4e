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

use fulcrum_sdk::rules::{Action as Taken, Call, EnvAction, EnvVar, HeaderOp, Outcome, ResponseOrigin, Target};
use regex::bytes::{CaptureLocations, Regex};

use crate::context::{Ctx, Env, HeaderTable, Request};
use crate::directive::{Action, Assignment, Attribute, Condition, HeaderRule, Item, Matcher, SetEnvIf, Table};
use crate::format::Phase;
use crate::pattern;

/// What httpd reports as `Request_Protocol`.
const PROTOCOL: &str = "HTTP/1.1";

/// The compiled rule set.
///
/// Per call the engine copies nothing it does not answer: the environment is the call's
/// variables with the actions taken so far on top ([`Env::of_call`]), the selected rules run as
/// they are found (no list), and header tables are built only when some rule or condition reads a
/// header (`reads_headers`): otherwise nothing would look at them.
#[derive(Debug)]
pub struct Engine {
    setenvif: Vec<SetEnvIf>,
    items: Vec<Item>,
    /// Whether a header rule or a condition reads a header (`%{X}i`, `%{X}o`, `req()`, `resp()`,
    /// `edit`). `SetEnvIf` reads its attribute from the call.
    reads_headers: bool,
    /// Capture storage of each `SetEnvIf` regex whose values use groups, reused between calls.
    locations: Vec<Option<CaptureLocations>>,
}

impl Engine {
    pub fn new(setenvif: Vec<SetEnvIf>, items: Vec<Item>, reads_headers: bool) -> Self {
        let locations = setenvif
            .iter()
            .map(|rule| match &rule.matcher {
                Matcher::Regex(regex) if rule.uses_groups && !rule.groups_are_the_match => {
                    Some(regex.capture_locations())
                }
                _ => None,
            })
            .collect();
        Engine { setenvif, items, reads_headers, locations }
    }

    /// The request phase. Everything is read from `call` (borrowed, not copied); actions name
    /// headers and variables by the handles declared at configure.
    pub fn on_request(&mut self, call: &Call<'_>) -> Outcome {
        let request = request_of(call);
        // What `SetEnvIf` did, kept apart as well: the rules after it read the variables through it.
        let mut env_actions = Vec::new();
        for (rule, locations) in self.setenvif.iter().zip(self.locations.iter_mut()) {
            apply_setenvif(rule, locations.as_mut(), &request, call, &mut env_actions);
        }
        let mut outcome = Outcome::default();
        for action in &env_actions {
            match &action.value {
                Some(value) => outcome.set_env(EnvVar(action.var), value),
                None => outcome.unset_env(EnvVar(action.var)),
            }
        }
        let env = Env::of_call(*call, &env_actions);
        if self.reads_headers {
            // Conditions see the headers as they arrived; rules see what the rules before them did.
            let received = HeaderTable::from_lines(call.request_header_lines());
            let mut live = received.clone();
            let select = Ctx { request, env: &env, request_headers: &received, response_headers: None };
            each_rule(&self.items, Phase::Request, &select, &mut |rule| {
                let before = outcome.len();
                {
                    let ctx = Ctx { request, env: &env, request_headers: &live, response_headers: None };
                    take(rule, &ctx, &live, &mut outcome);
                }
                apply_taken(rule, &outcome, before, &mut live);
            });
        } else {
            let none = HeaderTable::none();
            let ctx = Ctx { request, env: &env, request_headers: none, response_headers: None };
            each_rule(&self.items, Phase::Request, &ctx, &mut |rule| take(rule, &ctx, none, &mut outcome));
        }
        outcome
    }

    /// The response phase.
    pub fn on_response(&mut self, call: &Call<'_>) -> Outcome {
        let request = request_of(call);
        let env = Env::of_call(*call, &[]);
        let mut outcome = Outcome::default();
        let proxied = matches!(call.origin(), Some(ResponseOrigin::Proxied));
        let applies = |rule: &HeaderRule| proxied || rule.table == (Table::Response { always: true });
        if self.reads_headers {
            let request_headers = HeaderTable::from_lines(call.request_header_lines());
            let received = HeaderTable::from_lines(call.response_header_lines());
            let mut live = received.clone();
            let select =
                Ctx { request, env: &env, request_headers: &request_headers, response_headers: Some(&received) };
            each_rule(&self.items, Phase::Response, &select, &mut |rule| {
                if !applies(rule) {
                    return;
                }
                let before = outcome.len();
                {
                    let ctx =
                        Ctx { request, env: &env, request_headers: &request_headers, response_headers: Some(&live) };
                    take(rule, &ctx, &live, &mut outcome);
                }
                apply_taken(rule, &outcome, before, &mut live);
            });
        } else {
            let none = HeaderTable::none();
            let ctx = Ctx { request, env: &env, request_headers: none, response_headers: Some(none) };
            each_rule(&self.items, Phase::Response, &ctx, &mut |rule| {
                if applies(rule) {
                    take(rule, &ctx, none, &mut outcome);
                }
            });
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

/// The rules of `phase` that apply, in file order, each given to `run` as it is found: every
/// top-level rule, and the rules of the first branch of each chain whose condition holds against
/// `ctx` (the headers as they arrived: `run` does not change what `ctx` sees, so this is the same
/// as evaluating every condition first, as httpd does). Recursion is bounded by the nesting limit.
fn each_rule<'r>(items: &'r [Item], phase: Phase, ctx: &Ctx<'_>, run: &mut impl FnMut(&'r HeaderRule)) {
    for item in items {
        match item {
            Item::Rule(rule) if rule.table.phase() == phase => run(rule),
            Item::Rule(_) => {}
            Item::Chain(chain) if chain.has(phase) => {
                let chosen = chain.branches.iter().find(|b| b.condition.as_ref().is_none_or(|c| c.eval(ctx)));
                if let Some(branch) = chosen {
                    each_rule(&branch.items, phase, ctx, run);
                }
            }
            Item::Chain(_) => {}
        }
    }
}

/// mod_setenvif's `match_headers` for one rule. The environment it sees is the call's with the
/// actions of the rules before it.
fn apply_setenvif(
    rule: &SetEnvIf,
    locations: Option<&mut CaptureLocations>,
    request: &Request<'_>,
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
        // The lines joined with `, `, as httpd merges them (they arrive joined with `\n`).
        Attribute::Header(header, var) => {
            match header.slot.map_or_else(|| call.header(&header.name), |at| call.request_header_at(at)) {
                Some(value) if value.contains('\n') => Some(Cow::Owned(value.replace('\n', ", "))),
                Some(value) => Some(Cow::Borrowed(value)),
                None => Env::of_call(*call, actions).get_ref(var).map(|v| Cow::Owned(v.to_string())),
            }
        }
    };
    let Some(subject) = subject else { return };
    let haystack = subject.as_bytes();
    // Capture locations only when a value uses groups other than the whole match; the match
    // bounds when it uses only that; otherwise whether it matches is enough.
    let found = match (&rule.matcher, locations) {
        (Matcher::Regex(regex), Some(locations)) => match regex.captures_read(locations, haystack) {
            Some(_) => Found::Groups(&*locations),
            None => return,
        },
        (Matcher::Regex(regex), None) if rule.uses_groups => match regex.find(haystack) {
            Some(m) => Found::Match(m.as_bytes()),
            None => return,
        },
        (Matcher::Regex(regex), None) if regex.is_match(haystack) => Found::Nothing,
        (Matcher::Substring(text), _) if subject.contains(text.as_str()) => Found::Nothing,
        (Matcher::Regex(_) | Matcher::Substring(_), _) => return,
    };
    for (assignment, (var, constant)) in rule.assignments.iter().zip(&rule.compiled) {
        let value = match (assignment, constant) {
            (Assignment::Unset(_), _) => None,
            (Assignment::Set { .. }, Some(constant)) => Some(constant.clone()),
            (Assignment::Set { value, .. }, None) => Some(match found {
                Found::Groups(groups) => pattern::pregsub_locations(value, groups, haystack),
                Found::Match(matched) => pattern::pregsub_match(value, matched),
                // Unreachable: a value without a constant uses groups, and then one of the above.
                Found::Nothing => value.clone(),
            }),
        };
        actions.push(EnvAction { var: *var, value });
    }
}

/// What a `SetEnvIf` match found, as much as its values need.
#[derive(Clone, Copy)]
enum Found<'h> {
    Nothing,
    /// The whole match.
    Match(&'h [u8]),
    Groups(&'h CaptureLocations),
}

/// The actions one rule takes, given the live header table it applies to, into `out`: a value is
/// rendered straight into the answer.
fn take(rule: &HeaderRule, ctx: &Ctx<'_>, live: &HeaderTable<'_>, out: &mut Outcome) {
    let applies = match &rule.condition {
        Condition::Always => true,
        Condition::Env { var, set } => ctx.env.get_ref(var).is_some() == *set,
        Condition::Expr(expr) => expr.eval(ctx),
    };
    if !applies {
        return;
    }
    let target = Target(rule.target);
    match &rule.action {
        Action::Op(op, format) => out.header_with(*op, target, |value| format.render_into(ctx, value)),
        Action::Unset => out.header(HeaderOp::Unset, target, ""),
        Action::Edit { regex, replacement, all } => {
            let before: Vec<&str> = live.values(&rule.name).collect();
            let template = replacement.render(ctx);
            let after: Vec<String> = before.iter().map(|value| edit(regex, &template, value, *all)).collect();
            if after.iter().zip(&before).all(|(a, b)| a == b) {
                return; // absent, or no line changed
            }
            // One line: `set`. Several: `set` the first, `add` the others, keeping every line.
            for (i, value) in after.iter().enumerate() {
                out.header(if i == 0 { HeaderOp::Set } else { HeaderOp::Add }, target, value);
            }
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

/// Apply the header actions `rule` took (those of `out` from action `from` on) to the live table,
/// as the host will apply them to the message.
fn apply_taken(rule: &HeaderRule, out: &Outcome, from: usize, live: &mut HeaderTable<'_>) {
    for action in out.actions().skip(from) {
        if let Taken::Header { op, value, .. } = action {
            live.apply(op, &rule.name, value);
        }
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
