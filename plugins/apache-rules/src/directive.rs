//! The directives and sections, checked and compiled into rules, as httpd's `add_setenvif`,
//! `header_cmd` and `<If>` section handlers accept them.
//!
//! Supported:
//!
//! - `SetEnvIf` / `SetEnvIfNoCase attribute regex [!]VAR[=value] ...`. The attribute is a request
//!   header name (any case; repeated lines joined with `, `, as httpd merges them; when the request
//!   has no such header, an environment variable of that name set earlier is tested instead, as in
//!   httpd) or one of `Remote_Addr`, `Remote_Host` (the client address: httpd's default
//!   `HostnameLookups Off`), `Server_Addr` (Fulcrum does not pass the local address to rules, so
//!   this attribute never matches), `Request_Method`, `Request_Protocol` (always `HTTP/1.1`: Fulcrum
//!   speaks HTTP/1.1 to members, and httpd reports the request line's protocol) and `Request_URI`
//!   (the path as sent, without the query: what httpd has at that point). `VAR` sets `1`, `!VAR`
//!   unsets, `VAR=value` substitutes `$0`…`$9`. As in httpd, a case-sensitive pattern without
//!   regex metacharacters is a plain substring test, and its values are then taken literally
//!   (`$1` stays `$1`).
//! - `RequestHeader` and `Header [always|onsuccess]` with `set`, `append`, `add`, `unset`, `merge`,
//!   `setifempty`, `edit` and `edit*`, an optional trailing `env=VAR`, `env=!VAR` or
//!   `expr=EXPRESSION`, and httpd's argument rules (a trailing `:` on the header name is dropped).
//! - `<If "expr">`, `<ElseIf "expr">`, `<Else>` around `RequestHeader`/`Header` lines, nested
//!   sections included. An `<ElseIf>`/`<Else>` must come right after the `</If>`/`</ElseIf>` it
//!   continues (httpd tolerates directives in between; here that is an error, as it reads as a
//!   mistake).
//!
//! Refused with an error naming the line: any other directive or section, `SetEnvIf` inside a
//! section, header-name regexes as `SetEnvIf` attributes, `Header echo`/`note`, `early`, `expr=`
//! string values, and malformed arguments.

use std::fmt;

use fulcrum_sdk::rules::{HeaderOp, Needs, RequestFields};
use regex::bytes::Regex;

use crate::context::EnvRef;
use crate::engine::Engine;
use crate::expr::{self, Expr};
use crate::format::{Format, Phase};
use crate::needs::Reads;
use crate::parse;
use crate::pattern;

/// Sections nested deeper than this are refused (each level is a recursion at request time).
const MAX_NESTING: usize = 8;

/// A configuration mistake: `line N: message`, N counting lines of the directives text from 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// One `SetEnvIf`/`SetEnvIfNoCase` line.
#[derive(Debug)]
pub struct SetEnvIf {
    pub attribute: Attribute,
    pub matcher: Matcher,
    pub assignments: Vec<Assignment>,
    /// Per assignment: the variable's handle (its index in the declared env list) and, for a
    /// `VAR=value` whose value refers to no capture group, the value after substitution (so
    /// that the regex needs no captures).
    pub compiled: Vec<(u32, Option<String>)>,
    /// Whether any assignment's value refers to a capture group (`$0`...`$9`).
    pub uses_groups: bool,
    /// Whether every group the values refer to is the whole match (`$0`, or `$1` of a pattern
    /// that is one group): then the match bounds are enough, and no captures are needed.
    pub groups_are_the_match: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attribute {
    RemoteHost,
    RemoteAddr,
    ServerAddr,
    RequestMethod,
    RequestProtocol,
    RequestUri,
    /// A request header, or else an environment variable of that name.
    Header(HeaderRef, EnvRef),
}

/// The request header a `SetEnvIf` tests, and, once declared, its position among the declared
/// request headers: the call reads it from there instead of comparing the name with every
/// declared one, without regard to case, on every request.
#[derive(Debug, Clone)]
pub struct HeaderRef {
    pub name: String,
    pub slot: Option<usize>,
}

/// Two references are equal when they name the same header: the slot follows from the name.
impl PartialEq for HeaderRef {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for HeaderRef {}

const SPECIAL_ATTRIBUTES: &[(&str, Attribute)] = &[
    ("Remote_Host", Attribute::RemoteHost),
    ("Remote_Addr", Attribute::RemoteAddr),
    ("Server_Addr", Attribute::ServerAddr),
    ("Request_Method", Attribute::RequestMethod),
    ("Request_Protocol", Attribute::RequestProtocol),
    ("Request_URI", Attribute::RequestUri),
];

#[derive(Debug)]
pub enum Matcher {
    Regex(Regex),
    /// httpd's fast path for case-sensitive patterns without metacharacters.
    Substring(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assignment {
    Set { name: String, value: String },
    Unset(String),
}

/// One `RequestHeader` or `Header` line.
#[derive(Debug)]
pub struct HeaderRule {
    pub line: usize,
    pub table: Table,
    /// As written, without a trailing `:`.
    pub name: String,
    /// The handle of `name` (its index in the declared targets).
    pub target: u32,
    pub action: Action,
    pub condition: Condition,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Request,
    /// `always`: also on responses Fulcrum generates; otherwise (`onsuccess`) only on proxied ones.
    Response {
        always: bool,
    },
}

impl Table {
    pub fn phase(self) -> Phase {
        match self {
            Table::Request => Phase::Request,
            Table::Response { .. } => Phase::Response,
        }
    }
}

#[derive(Debug)]
pub enum Action {
    /// `set`, `append`, `add`, `merge`, `setifempty`: the host applies the op to the rendered value.
    Op(HeaderOp, Format),
    Unset,
    /// `edit` (`all: false`, first match of each line) and `edit*` (every match).
    Edit {
        regex: Regex,
        replacement: Format,
        all: bool,
    },
}

#[derive(Debug)]
pub enum Condition {
    Always,
    /// `env=VAR` (`set: true`) or `env=!VAR`: whether the variable is set, whatever its value.
    Env {
        var: EnvRef,
        set: bool,
    },
    Expr(Expr),
}

/// A rule, or an `<If>`/`<ElseIf>`/`<Else>` chain of which at most one branch applies.
#[derive(Debug)]
pub enum Item {
    Rule(HeaderRule),
    Chain(Chain),
}

#[derive(Debug, Default)]
pub struct Chain {
    pub branches: Vec<Branch>,
    /// Whether any branch holds `RequestHeader` rules (evaluated in the request phase).
    pub request: bool,
    /// Whether any branch holds `Header` rules (evaluated in the response phase).
    pub response: bool,
}

impl Chain {
    pub fn has(&self, phase: Phase) -> bool {
        match phase {
            Phase::Request => self.request,
            Phase::Response => self.response,
        }
    }

    fn push(&mut self, branch: Branch) {
        for item in &branch.items {
            match item {
                Item::Rule(rule) => match rule.table.phase() {
                    Phase::Request => self.request = true,
                    Phase::Response => self.response = true,
                },
                Item::Chain(chain) => {
                    self.request |= chain.request;
                    self.response |= chain.response;
                }
            }
        }
        self.branches.push(branch);
    }
}

#[derive(Debug)]
pub struct Branch {
    /// `None` for `<Else>`.
    pub condition: Option<Expr>,
    pub items: Vec<Item>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    If,
    ElseIf,
    Else,
}

impl Section {
    fn name(self) -> &'static str {
        match self {
            Section::If => "If",
            Section::ElseIf => "ElseIf",
            Section::Else => "Else",
        }
    }
}

/// The rules of one nesting level while it is being read.
struct Level {
    /// The section this level is the body of (`None` at the top).
    open: Option<(Section, usize, Option<Expr>)>,
    items: Vec<Item>,
    /// The last thing at this level was a closed `<If>`/`<ElseIf>`: an `<ElseIf>`/`<Else>` may follow.
    chain_open: bool,
}

/// Compile the directives text into the engine and what it reads.
pub fn compile(text: &str) -> Result<(Engine, Needs), ConfigError> {
    let mut reads = Reads::default();
    let mut setenvif = Vec::new();
    let mut levels = vec![Level { open: None, items: Vec::new(), chain_open: false }];
    for line in parse::logical_lines(text) {
        let number = line.number;
        let error = move |message: String| ConfigError { line: number, message };
        if let Some(rest) = line.text.strip_prefix("</") {
            close_section(rest, &mut levels).map_err(error)?;
        } else if let Some(rest) = line.text.strip_prefix('<') {
            open_section(rest, number, &mut levels, &mut reads).map_err(error)?;
        } else {
            let (name, args) = line.text.split_once(parse::is_space).unwrap_or((&line.text, ""));
            let level = levels.last_mut().ok_or_else(|| error("internal error: no level".into()))?;
            level.chain_open = false;
            let lower = name.to_ascii_lowercase();
            match lower.as_str() {
                "setenvif" | "setenvifnocase" => {
                    let directive = if lower == "setenvif" { "SetEnvIf" } else { "SetEnvIfNoCase" };
                    if level.open.is_some() {
                        return Err(error(format!("{directive} is not supported inside <If>/<ElseIf>/<Else>")));
                    }
                    let rule = setenvif_rule(directive, args, &mut reads)
                        .map_err(|why| error(format!("{directive}: {why}")))?;
                    setenvif.push(rule);
                }
                "requestheader" | "header" => {
                    let (directive, table) = if lower == "header" {
                        ("Header", Table::Response { always: false })
                    } else {
                        ("RequestHeader", Table::Request)
                    };
                    let rule = header_rule(table, args, number, &mut reads)
                        .map_err(|why| error(format!("{directive}: {why}")))?;
                    level.items.push(Item::Rule(rule));
                }
                _ => {
                    return Err(error(format!(
                        "unknown directive `{name}` (supported: SetEnvIf, SetEnvIfNoCase, RequestHeader, Header, \
                         <If>, <ElseIf>, <Else>)"
                    )));
                }
            }
        }
    }
    // Balanced text leaves only the top level, which has no open section.
    if let Some(Level { open: Some((section, line, _)), .. }) = levels.last() {
        let name = section.name();
        return Err(ConfigError { line: *line, message: format!("<{name}> is not closed (missing </{name}>)") });
    }
    let items = levels.pop().map(|level| level.items).unwrap_or_default();
    let reads_headers = reads.headers_read();
    Ok((Engine::new(setenvif, items, reads_headers), reads.into_needs()))
}

fn section_kind(name: &str) -> Option<Section> {
    match name.to_ascii_lowercase().as_str() {
        "if" => Some(Section::If),
        "elseif" => Some(Section::ElseIf),
        "else" => Some(Section::Else),
        _ => None,
    }
}

/// `<If "expr">`, `<ElseIf "expr">`, `<Else>`: `rest` follows the `<`.
fn open_section(rest: &str, number: usize, levels: &mut Vec<Level>, reads: &mut Reads) -> Result<(), String> {
    let name_end = rest.find(|c: char| parse::is_space(c) || c == '>').unwrap_or(rest.len());
    let (name, after) = rest.split_at(name_end);
    let Some(section) = section_kind(name) else {
        return Err(format!("section <{name}> is not supported (supported: <If>, <ElseIf>, <Else>)"));
    };
    let label = section.name();
    let Some(args) = after.trim_end_matches(parse::is_space).strip_suffix('>') else {
        return Err(format!("<{label}> line must end with `>`"));
    };
    let words = parse::words(args).map_err(|e| format!("<{label}>: {e}"))?;
    let condition = match (section, words.as_slice()) {
        (Section::Else, []) => None,
        (Section::Else, _) => return Err("<Else> takes no argument".into()),
        (_, [expression]) => {
            let mut expr =
                expr::parse(expression).map_err(|e| format!("<{label}>: bad expression `{expression}`: {e}"))?;
            expr.reads(reads);
            Some(expr)
        }
        (_, []) => return Err(format!("<{label}> needs an expression, as <{label} \"-n env('VAR')\">")),
        (_, _) => return Err(format!("<{label}> takes one argument: quote the whole expression")),
    };
    if levels.len() > MAX_NESTING {
        return Err(format!("<{label}> nested too deeply (more than {MAX_NESTING} levels)"));
    }
    let level = levels.last_mut().ok_or("internal error: no level")?;
    if section != Section::If && !level.chain_open {
        return Err(format!("<{label}> must come right after </If> or </ElseIf>"));
    }
    level.chain_open = false;
    levels.push(Level { open: Some((section, number, condition)), items: Vec::new(), chain_open: false });
    Ok(())
}

/// `</If>`, `</ElseIf>`, `</Else>`: `rest` follows the `</`.
fn close_section(rest: &str, levels: &mut Vec<Level>) -> Result<(), String> {
    let Some(name) = rest.strip_suffix('>') else {
        return Err(format!("`</{rest}` must end with `>`"));
    };
    let name = name.trim_matches(parse::is_space);
    let Some(closing) = section_kind(name) else {
        return Err(format!("section </{name}> is not supported (supported: </If>, </ElseIf>, </Else>)"));
    };
    let label = closing.name();
    let (section, opened, condition, items) = match levels.pop() {
        Some(Level { open: Some((section, opened, condition)), items, .. }) => (section, opened, condition, items),
        Some(top) => {
            levels.push(top);
            return Err(format!("</{label}> without an open <{label}>"));
        }
        None => return Err("internal error: no level".into()),
    };
    if section != closing {
        return Err(format!("</{label}> closes the <{}> opened on line {opened}", section.name()));
    }
    let parent = levels.last_mut().ok_or("internal error: no parent level")?;
    let branch = Branch { condition, items };
    match section {
        Section::If => {
            let mut chain = Chain::default();
            chain.push(branch);
            parent.items.push(Item::Chain(chain));
        }
        Section::ElseIf | Section::Else => match parent.items.last_mut() {
            Some(Item::Chain(chain)) => chain.push(branch),
            _ => return Err(format!("<{label}> does not follow an <If>")),
        },
    }
    parent.chain_open = section != Section::Else;
    Ok(())
}

/// `attribute regex [!]VAR[=value] ...`
fn setenvif_rule(directive: &str, args: &str, reads: &mut Reads) -> Result<SetEnvIf, String> {
    let icase = directive == "SetEnvIfNoCase";
    let mut words = parse::words(args)?.into_iter();
    let attribute = words.next().filter(|w| !w.is_empty()).ok_or(
        "missing the attribute: a request header name or Remote_Addr, Remote_Host, Server_Addr, Request_Method, \
         Request_Protocol, Request_URI",
    )?;
    let regex = words.next().filter(|w| !w.is_empty()).ok_or("missing the regular expression")?;
    let assignments = words.map(|w| assignment(&w)).collect::<Result<Vec<_>, _>>()?;
    if assignments.is_empty() {
        return Err("missing the variables to set: VAR, VAR=value or !VAR".into());
    }
    let mut attribute = match SPECIAL_ATTRIBUTES.iter().find(|(n, _)| n.eq_ignore_ascii_case(&attribute)) {
        Some((_, special)) => special.clone(),
        None if attribute.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') => {
            let var = EnvRef::new(attribute.as_str());
            Attribute::Header(HeaderRef { name: attribute, slot: None }, var)
        }
        None => {
            return Err(format!(
                "attribute `{attribute}` is a header-name regular expression, which is not supported: name one header"
            ));
        }
    };
    match &mut attribute {
        Attribute::RemoteHost | Attribute::RemoteAddr => reads.field(RequestFields::CLIENT_ADDR),
        Attribute::RequestMethod => reads.field(RequestFields::METHOD),
        Attribute::RequestUri => reads.field(RequestFields::PATH),
        Attribute::Header(header, var) => {
            // Without such a header, httpd tests an environment variable of that name.
            header.slot = Some(reads.setenvif_header(&header.name));
            var.declare(reads);
        }
        Attribute::ServerAddr | Attribute::RequestProtocol => {}
    }
    let matcher = match non_regex_pattern(&regex).filter(|_| !icase) {
        Some(plain) => Matcher::Substring(plain),
        None => Matcher::Regex(pattern::compile(&regex, icase)?),
    };
    let mut uses_groups = false;
    let mut groups_are_the_match = true;
    let compiled = assignments
        .iter()
        .map(|assignment| match assignment {
            Assignment::Unset(name) => (reads.env(name).0, None),
            Assignment::Set { name, value } => {
                let var = reads.env(name).0;
                match &matcher {
                    // httpd's plain-text patterns take values literally.
                    Matcher::Substring(_) => (var, Some(value.clone())),
                    Matcher::Regex(_) => match pattern::pregsub_constant(value) {
                        Some(constant) => (var, Some(constant)),
                        None => {
                            uses_groups = true;
                            groups_are_the_match &= pattern::groups_are_the_match(&regex, icase, value);
                            (var, None)
                        }
                    },
                }
            }
        })
        .collect();
    Ok(SetEnvIf { attribute, matcher, assignments, compiled, uses_groups, groups_are_the_match })
}

fn assignment(word: &str) -> Result<Assignment, String> {
    let assignment = if let Some(name) = word.strip_prefix('!') {
        Assignment::Unset(name.to_string())
    } else if let Some((name, value)) = word.split_once('=') {
        Assignment::Set { name: name.to_string(), value: value.to_string() }
    } else {
        Assignment::Set { name: word.to_string(), value: "1".to_string() }
    };
    match &assignment {
        Assignment::Set { name, .. } | Assignment::Unset(name) if name.is_empty() => {
            Err(format!("`{word}` names no variable"))
        }
        _ => Ok(assignment),
    }
}

/// mod_setenvif's `non_regex_pattern`: the literal text of a pattern without unescaped regex
/// metacharacters (a backslash may escape them), or `None` when it is a real regex.
fn non_regex_pattern(pattern: &str) -> Option<String> {
    let mut in_escape = false;
    for c in pattern.chars() {
        match c {
            '^' | '.' | '$' | '|' | '(' | ')' | '[' | ']' | '*' | '+' | '?' | '{' | '}' => {
                if !in_escape {
                    return None;
                }
                in_escape = false;
            }
            '\\' => in_escape = !in_escape,
            _ if in_escape => return None,
            _ => {}
        }
    }
    let mut plain = String::with_capacity(pattern.len());
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => plain.extend(chars.next()),
            _ => plain.push(c),
        }
    }
    Some(plain)
}

/// `[always|onsuccess] action header [value [replacement]] [condition]`, as `header_cmd` and
/// `header_inout_cmd` read them.
fn header_rule(mut table: Table, args: &str, line: usize, reads: &mut Reads) -> Result<HeaderRule, String> {
    let mut words = parse::words(args)?.into_iter();
    let mut action =
        words.next().ok_or("missing the action (set, append, add, unset, merge, setifempty, edit, edit*)")?;
    if table != Table::Request && (action.eq_ignore_ascii_case("always") || action.eq_ignore_ascii_case("onsuccess")) {
        table = Table::Response { always: action.eq_ignore_ascii_case("always") };
        action = words.next().ok_or("missing the action after the condition")?;
    }
    let header = words.next().ok_or("missing the header name")?;
    let value = words.next();
    let replacement = words.next();
    let clause = words.next();
    if words.next().is_some() {
        return Err("too many arguments".into());
    }

    enum Kind {
        Op(HeaderOp),
        Unset,
        Edit(bool),
    }
    let kind = match action.to_ascii_lowercase().as_str() {
        "set" => Kind::Op(HeaderOp::Set),
        "setifempty" => Kind::Op(HeaderOp::SetIfEmpty),
        "append" => Kind::Op(HeaderOp::Append),
        "add" => Kind::Op(HeaderOp::Add),
        "merge" => Kind::Op(HeaderOp::Merge),
        "unset" => Kind::Unset,
        "edit" => Kind::Edit(false),
        "edit*" => Kind::Edit(true),
        "echo" | "note" => return Err(format!("action `{action}` is not supported")),
        _ => {
            return Err(format!(
                "unknown action `{action}` (expected set, append, add, unset, merge, setifempty, edit or edit*)"
            ));
        }
    };
    // httpd: without a replacement (anything but edit) the fourth word is the condition.
    let (value, replacement, clause) = match (&kind, value, replacement, clause) {
        (Kind::Edit(_), Some(regex), Some(replacement), clause) => (Some(regex), Some(replacement), clause),
        (Kind::Edit(_), ..) => return Err(format!("`{action}` needs a regex and a replacement")),
        (_, _, Some(_), Some(_)) => return Err("too many arguments".into()),
        (Kind::Unset, Some(clause), None, None) => (None, None, Some(clause)),
        (Kind::Unset, Some(_), Some(_), _) => {
            return Err("`unset` takes a header name and an optional condition".into());
        }
        (Kind::Unset, None, ..) => (None, None, None),
        (Kind::Op(_), None, ..) => return Err(format!("`{action}` needs a header name and a value")),
        (Kind::Op(_), value, clause, None) => (value, None, clause),
        _ => return Err("too many arguments".into()), // a condition word without a value before it
    };

    let name = header.split(':').next().unwrap_or_default();
    if name.is_empty() || !name.bytes().all(is_token_byte) {
        return Err(format!("bad header name `{header}`"));
    }
    let phase = table.phase();
    let target = reads.target(name).0;
    let condition = condition(clause.as_deref(), reads)?;
    let action = match kind {
        Kind::Op(op) => {
            let value = value.unwrap_or_default();
            if value.get(..5).is_some_and(|p| p.eq_ignore_ascii_case("expr=")) {
                return Err(format!("string expressions as values (`{value}`) are not supported"));
            }
            let mut format = Format::parse(&value, phase)?;
            format.reads(reads);
            Action::Op(op, format)
        }
        Kind::Unset => Action::Unset,
        Kind::Edit(all) => {
            let regex = pattern::compile(&value.unwrap_or_default(), false)?;
            let mut replacement = Format::parse(&replacement.unwrap_or_default(), phase)?;
            replacement.reads(reads);
            match phase {
                Phase::Request => reads.request_header(name),
                Phase::Response => reads.response_header(name),
            }
            Action::Edit { regex, replacement, all }
        }
    };
    Ok(HeaderRule { line, table, name: name.to_string(), target, action, condition })
}

fn condition(clause: Option<&str>, reads: &mut Reads) -> Result<Condition, String> {
    let Some(clause) = clause else { return Ok(Condition::Always) };
    let prefix = |p: &str| clause.get(..p.len()).filter(|head| head.eq_ignore_ascii_case(p)).and(clause.get(p.len()..));
    if clause.eq_ignore_ascii_case("early") {
        Err("`early` (rules run before the request is read) is not supported".into())
    } else if let Some(var) = prefix("env=") {
        let (name, set) = match var.strip_prefix('!') {
            Some(name) => (name, false),
            None => (var, true),
        };
        if name.is_empty() {
            return Err(format!("`{clause}` names no variable: write env=VAR or env=!VAR"));
        }
        let mut var = EnvRef::new(name);
        var.declare(reads);
        Ok(Condition::Env { var, set })
    } else if let Some(source) = prefix("expr=") {
        let mut expr = expr::parse(source).map_err(|e| format!("bad expression `{source}`: {e}"))?;
        expr.reads(reads);
        Ok(Condition::Expr(expr))
    } else {
        Err(format!("unknown condition `{clause}` (expected env=VAR, env=!VAR or expr=EXPRESSION)"))
    }
}

/// RFC 9110 `tchar`.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str) -> String {
        match compile(text) {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => e.to_string(),
        }
    }

    fn needs(text: &str) -> Needs {
        compile(text).unwrap_or_else(|e| panic!("{text}: {e}")).1
    }

    #[test]
    fn the_guide_compiles() {
        // The guide's rules as `examples/apache-guide.toml` carries them.
        let example = include_str!("../../../examples/apache-guide.toml");
        let from = example.find("directives = '''").expect("the example has directives") + "directives = '''".len();
        let guide = &example[from..from + example[from..].find("'''").expect("closed")];
        let needs = needs(guide);
        assert_eq!(needs.fields(), RequestFields::CLIENT_ADDR);
        assert_eq!(needs.request_headers(), ["x-forwarded-for"]);
        assert!(needs.response_headers().is_empty());
        // Read or set: SetEnvIf's attribute (a variable when the header is absent) and assignment,
        // env('FORWARD_IP'), %{X}e and env=X.
        assert_eq!(
            needs.env_vars(),
            [
                "X-Forwarded-For",
                "FORWARD_IP",
                "BALANCER_ROUTE_CHANGED",
                "BALANCER_WORKER_ROUTE",
                "BALANCER_SESSION_ROUTE"
            ]
        );
        assert_eq!(needs.targets(), ["X-Forwarded-For", "Set-Cookie", "X-Balance"]);
    }

    #[test]
    fn env_names_are_declared_wherever_they_are_read_or_set() {
        let cases: &[(&str, &[&str])] = &[
            ("SetEnvIf X-A ^1 B=1 !C", &["X-A", "B", "C"]),
            ("Header set X-A %{V}e", &["V"]),
            ("Header set X-A 1 env=!W", &["W"]),
            ("Header set X-A 1 \"expr=-n env('E')\"", &["E"]),
            ("<If \"%{env:F} == 'x'\">\nHeader set X-A 1\n</If>", &["F"]),
            ("Header set X-A \"%t %D\"", &[]),
        ];
        for (text, env) in cases {
            assert_eq!(needs(text).env_vars(), *env, "{text}");
        }
    }

    #[test]
    fn needs_are_exactly_what_the_rules_read() {
        let cases: &[(&str, RequestFields, &[&str], &[&str])] = &[
            ("", RequestFields::empty(), &[], &[]),
            ("SetEnvIf Remote_Addr ^10 A", RequestFields::CLIENT_ADDR, &[], &[]),
            ("SetEnvIf remote_host ^10 A", RequestFields::CLIENT_ADDR, &[], &[]),
            ("SetEnvIf Request_Method GET A", RequestFields::METHOD, &[], &[]),
            ("SetEnvIf Request_URI ^/x A", RequestFields::PATH, &[], &[]),
            ("SetEnvIf Request_Protocol HTTP A\nSetEnvIf Server_Addr x A", RequestFields::empty(), &[], &[]),
            ("SetEnvIfNoCase User-Agent curl A", RequestFields::empty(), &["user-agent"], &[]),
            ("RequestHeader set X %{Host}i", RequestFields::empty(), &["host"], &[]),
            ("RequestHeader edit X-A a b", RequestFields::empty(), &["x-a"], &[]),
            ("Header edit* Location a b", RequestFields::empty(), &[], &["location"]),
            ("Header set X %{Server}o|%{Via}i", RequestFields::empty(), &["via"], &["server"]),
            ("Header set X y \"expr=resp('A') == req('B')\"", RequestFields::empty(), &["b"], &["a"]),
            (
                "<If \"%{QUERY_STRING} == '' && %{HTTP_HOST} == 'h' && %{REQUEST_URI} == '/'\">\nHeader unset X\n</If>",
                RequestFields::QUERY.union(RequestFields::HOST).union(RequestFields::PATH),
                &[],
                &[],
            ),
            ("Header set X \"%{FOO}e %t %D %{X}s\" env=BAR", RequestFields::empty(), &[], &[]),
            ("RequestHeader set X y expr=%{REQUEST_METHOD}=='GET'", RequestFields::METHOD, &[], &[]),
            ("SetEnvIf X-A a A\nSetEnvIf x-a b B\nRequestHeader set Y %{X-A}i", RequestFields::empty(), &["x-a"], &[]),
        ];
        for (text, fields, request_headers, response_headers) in cases {
            let needs = needs(text);
            assert_eq!(needs.fields(), *fields, "{text}");
            assert_eq!(needs.request_headers(), *request_headers, "{text}");
            assert_eq!(needs.response_headers(), *response_headers, "{text}");
        }
    }

    #[test]
    fn every_mistake_names_its_line_and_directive() {
        let cases: &[(&str, &str)] = &[
            ("Foo bar", "line 1: unknown directive `Foo`"),
            ("\n\n# c\nProxyPass / balancer://x/", "line 4: unknown directive `ProxyPass`"),
            ("SetEnvIf", "line 1: SetEnvIf: missing the attribute"),
            ("SetEnvIf X", "line 1: SetEnvIf: missing the regular expression"),
            ("SetEnvIf X y", "line 1: SetEnvIf: missing the variables to set"),
            ("SetEnvIf X (a)\\1 A", "line 1: SetEnvIf: bad regex `(a)\\1`: backreferences are not supported"),
            ("SetEnvIfNoCase X (?=a) A", "line 1: SetEnvIfNoCase: bad regex `(?=a)`: look-around"),
            ("SetEnvIf X-.* y A", "line 1: SetEnvIf: attribute `X-.*` is a header-name regular expression"),
            ("SetEnvIf X y =v", "line 1: SetEnvIf: `=v` names no variable"),
            ("SetEnvIf X y !", "line 1: SetEnvIf: `!` names no variable"),
            ("SetEnvIf X \"y A", "line 1: SetEnvIf: unterminated \" quote"),
            ("Header sett X y", "line 1: Header: unknown action `sett`"),
            ("RequestHeader always set X y", "line 1: RequestHeader: unknown action `always`"),
            ("Header always", "line 1: Header: missing the action after the condition"),
            ("Header set", "line 1: Header: missing the header name"),
            ("Header set X", "line 1: Header: `set` needs a header name and a value"),
            ("Header set X y z", "line 1: Header: unknown condition `z`"),
            ("Header set X y env=A extra", "line 1: Header: too many arguments"),
            ("Header edit X a b env=A extra", "line 1: Header: too many arguments"),
            ("Header set X y early", "line 1: Header: `early`"),
            ("Header set X y env=", "line 1: Header: `env=` names no variable"),
            ("Header set X y env=!", "line 1: Header: `env=!` names no variable"),
            ("Header set X y expr=", "line 1: Header: bad expression ``"),
            ("Header set X y \"expr=-z\"", "line 1: Header: bad expression `-z`"),
            ("Header unset X y z", "line 1: Header: `unset` takes a header name"),
            ("Header unset X y", "line 1: Header: unknown condition `y`"),
            ("Header edit X a", "line 1: Header: `edit` needs a regex and a replacement"),
            ("Header edit* X (a b", "line 1: Header: bad regex `(a`"),
            ("Header echo X", "line 1: Header: action `echo` is not supported"),
            ("Header note X y", "line 1: Header: action `note` is not supported"),
            ("Header set X expr=%{REQUEST_URI}", "line 1: Header: string expressions as values"),
            ("Header set X %{X}q", "line 1: Header: unrecognized format `%q` in `%{X}q`"),
            ("Header set X %{X", "line 1: Header: unterminated `%{X`"),
            ("RequestHeader set X %{Server}o", "line 1: RequestHeader: `%{Name}o`"),
            ("Header set \"X Y\" v", "line 1: Header: bad header name `X Y`"),
            ("Header set : v", "line 1: Header: bad header name `:`"),
            ("<If \"true\">\nHeader set X y", "line 1: <If> is not closed (missing </If>)"),
            ("<If \"true\">\n<If \"true\">\n</If>", "line 1: <If> is not closed"),
            ("</If>", "line 1: </If> without an open <If>"),
            ("<Else>\n</Else>", "line 1: <Else> must come right after </If> or </ElseIf>"),
            ("<ElseIf \"true\">\n</ElseIf>", "line 1: <ElseIf> must come right after"),
            ("<If \"true\">\n</If>\nHeader set X y\n<Else>\n</Else>", "line 4: <Else> must come right after"),
            ("<If \"true\">\n</If>\n<Else>\n</Else>\n<Else>\n</Else>", "line 5: <Else> must come right after"),
            ("<If \"true\">\n</Else>", "line 2: </Else> closes the <If> opened on line 1"),
            ("<If \"true\">\nSetEnvIf X y A\n</If>", "line 2: SetEnvIf is not supported inside"),
            ("<If>\n</If>", "line 1: <If> needs an expression"),
            ("<If -z env('A')>\n</If>", "line 1: <If> takes one argument"),
            ("<If \"true\"\n</If>", "line 1: <If> line must end with `>`"),
            ("<Else \"true\">", "line 1: <Else> takes no argument"),
            ("<If \"env('A')\">\n</If>", "line 1: <If>: bad expression `env('A')`: expected a comparison operator"),
            ("<If \"%{X} == 'a'\">\n</If>", "line 1: <If>: bad expression `%{X} == 'a'`: unsupported variable"),
            ("<Location />\n</Location>", "line 1: section <Location> is not supported"),
            ("</Location>", "line 1: section </Location> is not supported"),
        ];
        for (text, expected) in cases {
            let message = error(text);
            assert!(message.starts_with(expected), "{text:?}\n got: {message}\nwant: {expected}");
        }
    }

    #[test]
    fn sections_nest_but_not_without_limit() {
        let nested = "<If \"true\">\n".repeat(MAX_NESTING) + &"</If>\n".repeat(MAX_NESTING);
        assert!(compile(&nested).is_ok());
        let deeper = "<If \"true\">\n".repeat(MAX_NESTING + 1) + &"</If>\n".repeat(MAX_NESTING + 1);
        assert!(error(&deeper).contains("nested too deeply"));
    }

    #[test]
    fn directive_and_section_names_ignore_case() {
        let text = "setenvif x-a a A\nSETENVIFNOCASE x-a a A\nrequestheader SET X y\nheader ALWAYS Set X y\n<if \"true\">\n</IF>\n<else>\n</ELSE>";
        assert!(compile(text).is_ok());
    }

    #[test]
    fn plain_patterns_are_detected_as_httpd_does() {
        let cases: &[(&str, Option<&str>)] = &[
            ("Mozilla", Some("Mozilla")),
            (r"example\.com", Some("example.com")),
            (r"a\\b", Some(r"a\b")),
            ("example.com", None),
            (r"\d+", None),
            ("^GET", None),
            ("a b", Some("a b")),
        ];
        for (pattern, expected) in cases {
            assert_eq!(non_regex_pattern(pattern).as_deref(), *expected, "{pattern}");
        }
    }
}
