//! The subset of httpd's ap_expr used by `<If>`, `<ElseIf>` and `Header ... expr=`.
//!
//! A hand-written lexer and recursive-descent parser that follow httpd's `util_expr_scan.l` and
//! `util_expr_parse.y` for what they accept, so an expression means here what it means there:
//!
//! - `true`, `false`, `( … )`, `!` (binds tightest), `&&`, then `||` (both left-associative);
//! - unary `-z WORD` (empty), `-n WORD` (not empty);
//! - `WORD == WORD` (also `=`), `WORD != WORD`: exact string comparison;
//! - `WORD =~ /regex/`, `WORD !~ /regex/` (also `m#regex#` with any of httpd's delimiters
//!   `/#$%^|?!'",;:._-`; flag `i` for case-insensitive; the delimiter cannot be escaped, as in
//!   httpd);
//! - `WORD -ipmatch 'CIDR'`: IPv4 or IPv6, `a.b.c.d/bits`, `a.b.c.d/netmask`, a bare address, or
//!   httpd's partial networks (`10.1` = `10.1.0.0/16`). The subnet must be a constant.
//!
//! A WORD is a quoted string (`'…'` or `"…"`, with `%{VAR}` interpolated and httpd's escapes
//! `\n \r \t \b \f \NNN \xHH \<char>`), digits, a variable, a function call, or several of those
//! joined with `.`. Variables: `%{REMOTE_ADDR}` (the client address), `%{REQUEST_METHOD}`,
//! `%{REQUEST_URI}` (the path as sent, without the query; httpd has decoded it by then),
//! `%{HTTP_HOST}`, `%{QUERY_STRING}`, and mod_ssl's `%{HTTPS}` (`on` over TLS, else `off`),
//! `%{SSL_PROTOCOL}`, `%{SSL_CIPHER}`, `%{SSL_TLS_SNI}` (empty without TLS). Functions, whose argument must be a constant string (so that
//! the headers they read can be declared in `configure`): `env('VAR')` (unset: empty),
//! `req('Name')` and its alias `http('Name')` (a request header, repeated lines joined with `, `),
//! `resp('Name')` (the first line of a response header; empty in the request phase). The
//! `%{func:arg}` spelling of a function call (`%{env:VAR}`) works too. Function and variable names
//! ignore case, as in httpd.
//!
//! Not supported, each a configuration error naming it: the other operators (`<`, `-eq`, `-in`,
//! `-strmatch`, `-R`, `-f`, …), the other variables and functions, `$1` back-references to a
//! previous match, `%{:…:}` sub-expressions, and word lists `{ … }`.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use fulcrum_sdk::rules::RequestFields;
use regex::bytes::Regex;

use crate::context::{Ctx, EnvRef};
use crate::needs::Reads;
use crate::pattern;

/// Parentheses, `!` and function calls nested deeper than this are refused.
const MAX_DEPTH: usize = 32;
/// More `&&`/`||`/`!` operators than this are refused: evaluation recurses once per operator.
const MAX_OPERATORS: usize = 256;

/// A parsed boolean expression.
#[derive(Debug)]
pub enum Expr {
    Const(bool),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    /// `-z`
    IsEmpty(Word),
    /// `-n`
    NotEmpty(Word),
    /// `==` (`negate: false`) and `!=`
    Equals {
        left: Word,
        right: Word,
        negate: bool,
    },
    /// `=~` (`negate: false`) and `!~`
    Matches {
        word: Word,
        regex: Regex,
        negate: bool,
    },
    IpMatch {
        word: Word,
        subnet: Subnet,
    },
}

/// A string-valued operand: the concatenation of its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word(Vec<Part>);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Text(String),
    Var(Var),
    Env(EnvRef),
    /// `%{HTTPS}`: `on` when the host set the variable (a TLS request), else `off`, as httpd's.
    Https(EnvRef),
    RequestHeader(String),
    ResponseHeader(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    RemoteAddr,
    RequestMethod,
    RequestUri,
    HttpHost,
    QueryString,
}

/// mod_ssl's variables an expression may read besides `%{HTTPS}` (set by the host over TLS).
const TLS_VARIABLES: [&str; 3] = ["SSL_PROTOCOL", "SSL_CIPHER", "SSL_TLS_SNI"];

const VARIABLES: &[(&str, Var)] = &[
    ("REMOTE_ADDR", Var::RemoteAddr),
    ("REQUEST_METHOD", Var::RequestMethod),
    ("REQUEST_URI", Var::RequestUri),
    ("HTTP_HOST", Var::HttpHost),
    ("QUERY_STRING", Var::QueryString),
];

/// Parse and check an expression; regexes and subnets are compiled here, once.
pub fn parse(source: &str) -> Result<Expr, String> {
    let tokens = lex(source)?;
    let mut parser = Parser { tokens, pos: 0, depth: 0, operators: 0 };
    let expr = parser.or()?;
    match parser.tokens.get(parser.pos) {
        None => Ok(expr),
        Some(tok) => Err(format!("unexpected {} after a complete expression", tok.describe())),
    }
}

impl Expr {
    pub fn eval(&self, ctx: &Ctx<'_>) -> bool {
        match self {
            Expr::Const(value) => *value,
            Expr::Not(e) => !e.eval(ctx),
            Expr::And(a, b) => a.eval(ctx) && b.eval(ctx),
            Expr::Or(a, b) => a.eval(ctx) || b.eval(ctx),
            Expr::IsEmpty(w) => w.eval(ctx).is_empty(),
            Expr::NotEmpty(w) => !w.eval(ctx).is_empty(),
            Expr::Equals { left, right, negate } => (left.eval(ctx) == right.eval(ctx)) != *negate,
            Expr::Matches { word, regex, negate } => regex.is_match(word.eval(ctx).as_bytes()) != *negate,
            Expr::IpMatch { word, subnet } => subnet.contains(&word.eval(ctx)),
        }
    }

    /// Record the request fields and headers this expression reads.
    pub fn reads(&mut self, reads: &mut Reads) {
        match self {
            Expr::Const(_) => {}
            Expr::Not(e) => e.reads(reads),
            Expr::And(a, b) | Expr::Or(a, b) => {
                a.reads(reads);
                b.reads(reads);
            }
            Expr::IsEmpty(w) | Expr::NotEmpty(w) => w.reads(reads),
            Expr::Equals { left, right, .. } => {
                left.reads(reads);
                right.reads(reads);
            }
            Expr::Matches { word, .. } | Expr::IpMatch { word, .. } => word.reads(reads),
        }
    }
}

impl Part {
    fn eval<'s>(&'s self, ctx: &'s Ctx<'_>) -> Cow<'s, str> {
        match self {
            Part::Text(text) => Cow::Borrowed(text),
            Part::Var(var) => Cow::Borrowed(match var {
                Var::RemoteAddr => ctx.request.client_addr,
                Var::RequestMethod => ctx.request.method,
                Var::RequestUri => ctx.request.path,
                Var::HttpHost => ctx.request.host,
                Var::QueryString => ctx.request.query,
            }),
            Part::Env(var) => Cow::Borrowed(ctx.env.get_ref(var).unwrap_or_default()),
            Part::Https(var) => Cow::Borrowed(ctx.env.get_ref(var).filter(|v| !v.is_empty()).unwrap_or("off")),
            Part::RequestHeader(name) => ctx.request_headers.joined_cow(name).unwrap_or_default(),
            Part::ResponseHeader(name) => {
                Cow::Borrowed(ctx.response_headers.and_then(|t| t.first(name)).unwrap_or_default())
            }
        }
    }
}

impl Word {
    /// The word's text: borrowed when it is one part that needs no joining (no allocation).
    pub fn eval<'s>(&'s self, ctx: &'s Ctx<'_>) -> Cow<'s, str> {
        match self.0.as_slice() {
            [] => Cow::Borrowed(""),
            [part] => part.eval(ctx),
            parts => {
                let mut out = String::new();
                for part in parts {
                    out.push_str(&part.eval(ctx));
                }
                Cow::Owned(out)
            }
        }
    }

    fn reads(&mut self, reads: &mut Reads) {
        for part in &mut self.0 {
            match part {
                Part::Text(_) => {}
                Part::Env(var) | Part::Https(var) => var.declare(reads),
                Part::Var(var) => reads.field(match var {
                    Var::RemoteAddr => RequestFields::CLIENT_ADDR,
                    Var::RequestMethod => RequestFields::METHOD,
                    Var::RequestUri => RequestFields::PATH,
                    Var::HttpHost => RequestFields::HOST,
                    Var::QueryString => RequestFields::QUERY,
                }),
                Part::RequestHeader(name) => reads.request_header(name),
                Part::ResponseHeader(name) => reads.response_header(name),
            }
        }
    }

    /// The text of a word without variables or function calls.
    fn constant(&self) -> Option<String> {
        self.0
            .iter()
            .map(|p| match p {
                Part::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Lexer (util_expr_scan.l)

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    LParen,
    RParen,
    Comma,
    Not,
    And,
    Or,
    Concat,
    Eq,
    Ne,
    Match,
    NoMatch,
    /// An operator httpd knows and this subset does not (`<`, `-eq`, `-in`, …).
    Unsupported(String),
    /// `-z`, `-n`, … (one letter)
    Unary(char),
    /// `-ipmatch`, `-strmatch`, … (longer names)
    Binary(String),
    True,
    False,
    Digits(String),
    Str(Vec<Part>),
    Var(Part),
    Ident(String),
    Regex {
        source: String,
        icase: bool,
    },
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::LParen => "`(`".into(),
            Tok::RParen => "`)`".into(),
            Tok::Comma => "`,`".into(),
            Tok::Not => "`!`".into(),
            Tok::And => "`&&`".into(),
            Tok::Or => "`||`".into(),
            Tok::Concat => "`.`".into(),
            Tok::Eq => "`==`".into(),
            Tok::Ne => "`!=`".into(),
            Tok::Match => "`=~`".into(),
            Tok::NoMatch => "`!~`".into(),
            Tok::Unsupported(op) => format!("`{op}`"),
            Tok::Unary(c) => format!("`-{c}`"),
            Tok::Binary(name) => format!("`-{name}`"),
            Tok::True => "`true`".into(),
            Tok::False => "`false`".into(),
            Tok::Digits(d) => format!("`{d}`"),
            Tok::Str(_) => "a string".into(),
            Tok::Var(_) => "a variable".into(),
            Tok::Ident(name) => format!("`{name}`"),
            Tok::Regex { source, .. } => format!("regex `{source}`"),
        }
    }
}

/// httpd's regex delimiters after `m` (`REG_SEP`).
fn is_regex_delimiter(c: char) -> bool {
    "/#$%^|?!'\",;:._-".contains(c)
}

fn lex(source: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = source.chars().collect();
    let at = |i: usize| chars.get(i).copied();
    let mut tokens = Vec::new();
    let mut i = 0;
    while let Some(c) = at(i) {
        let next = at(i + 1);
        let (token, len) = match c {
            _ if c.is_whitespace() => {
                i += 1;
                continue;
            }
            '(' => (Tok::LParen, 1),
            ')' => (Tok::RParen, 1),
            ',' => (Tok::Comma, 1),
            '.' => (Tok::Concat, 1),
            '{' | '}' => return Err("word lists `{ ... }` are not supported".into()),
            '=' => match next {
                Some('~') => (Tok::Match, 2),
                Some('=') => (Tok::Eq, 2),
                _ => (Tok::Eq, 1),
            },
            '!' => match next {
                Some('=') => (Tok::Ne, 2),
                Some('~') => (Tok::NoMatch, 2),
                _ => (Tok::Not, 1),
            },
            '&' if next == Some('&') => (Tok::And, 2),
            '|' if next == Some('|') => (Tok::Or, 2),
            '<' | '>' => {
                let len = if next == Some('=') { 2 } else { 1 };
                (Tok::Unsupported(chars.iter().skip(i).take(len).collect()), len)
            }
            '\'' | '"' => {
                let (parts, end) = lex_string(&chars, i + 1, c)?;
                tokens.push(Tok::Str(parts));
                i = end;
                continue;
            }
            '%' if next == Some('{') => {
                let (part, end) = lex_var(&chars, i + 2)?;
                tokens.push(Tok::Var(part));
                i = end;
                continue;
            }
            '/' => {
                let (token, end) = lex_regex(&chars, i + 1, '/')?;
                tokens.push(token);
                i = end;
                continue;
            }
            'm' if next.is_some_and(is_regex_delimiter) => {
                let delimiter = next.unwrap_or('/');
                let (token, end) = lex_regex(&chars, i + 2, delimiter)?;
                tokens.push(token);
                i = end;
                continue;
            }
            '$' if next.is_some_and(|d| d.is_ascii_digit()) => {
                return Err("regex back-references (`$1`) are not supported".into());
            }
            '-' if next.is_some_and(|d| d.is_ascii_digit()) => {
                let digits: String = chars.iter().skip(i + 1).take_while(|d| d.is_ascii_digit()).collect();
                (Tok::Digits(format!("-{digits}")), 1 + digits.len())
            }
            '-' if next.is_some_and(|l| l.is_ascii_alphabetic() || l == '_') => {
                let name: String =
                    chars.iter().skip(i + 1).take_while(|l| l.is_ascii_alphanumeric() || **l == '_').collect();
                let len = 1 + name.len();
                let mut letters = name.chars();
                match (letters.next(), letters.next()) {
                    (Some(op), None) => (Tok::Unary(op), len),
                    _ => (Tok::Binary(name), len),
                }
            }
            _ if c.is_ascii_digit() => {
                let digits: String = chars.iter().skip(i).take_while(|d| d.is_ascii_digit()).collect();
                let len = digits.len();
                (Tok::Digits(digits), len)
            }
            _ if c.is_ascii_alphabetic() => {
                let name: String =
                    chars.iter().skip(i).take_while(|l| l.is_ascii_alphanumeric() || **l == '_').collect();
                let len = name.len();
                let token = match name.as_str() {
                    "true" => Tok::True,
                    "false" => Tok::False,
                    _ => Tok::Ident(name),
                };
                (token, len)
            }
            _ => return Err(format!("unexpected character `{c}`")),
        };
        tokens.push(token);
        i += len;
    }
    Ok(tokens)
}

/// A quoted string starting after its opening `quote`; returns its parts and the index after it.
fn lex_string(chars: &[char], start: usize, quote: char) -> Result<(Vec<Part>, usize), String> {
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut i = start;
    loop {
        let Some(c) = chars.get(i).copied() else {
            return Err(format!("unterminated string (missing closing {quote})"));
        };
        let next = chars.get(i + 1).copied();
        i += 1;
        match c {
            _ if c == quote => break,
            '\\' => {
                let (ch, len) = lex_escape(chars, i)?;
                text.push(ch);
                i += len;
            }
            '%' if next == Some('{') => {
                if !text.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut text)));
                }
                let (part, end) = lex_var(chars, i + 1)?;
                parts.push(part);
                i = end;
            }
            '$' if next.is_some_and(|d| d.is_ascii_digit()) => {
                return Err("regex back-references (`$1`) are not supported".into());
            }
            _ if c.is_control() => return Err(format!("invalid character {c:?} in a string")),
            _ => text.push(c),
        }
    }
    if !text.is_empty() || parts.is_empty() {
        parts.push(Part::Text(text));
    }
    Ok((parts, i))
}

/// The escape after a backslash at `chars[i..]`: the character and how many characters it used.
fn lex_escape(chars: &[char], i: usize) -> Result<(char, usize), String> {
    let Some(c) = chars.get(i).copied() else { return Err("a string ends with a lone backslash".into()) };
    let simple = match c {
        'n' => Some('\n'),
        'r' => Some('\r'),
        't' => Some('\t'),
        'b' => Some('\x08'),
        'f' => Some('\x0c'),
        _ => None,
    };
    if let Some(ch) = simple {
        return Ok((ch, 1));
    }
    let (radix, skip, max) = match c {
        '0'..='7' => (8, 0, 3),
        'x' if chars.get(i + 1).is_some_and(char::is_ascii_hexdigit) => (16, 1, 2),
        '8' | '9' => return Err(format!("bad character escape `\\{c}`")),
        _ if c.is_control() => return Err(format!("invalid character {c:?} in a string")),
        _ => return Ok((c, 1)),
    };
    let digits: String = chars.iter().skip(i + skip).take(max).take_while(|d| d.is_digit(radix)).collect();
    match u8::from_str_radix(&digits, radix) {
        Ok(byte) => Ok((char::from(byte), skip + digits.len())),
        Err(_) => Err(format!("bad character escape `\\{}{digits}`", if skip == 1 { "x" } else { "" })),
    }
}

/// A variable after `%{`: `NAME}` or `func:arg}`; returns it and the index after the `}`.
fn lex_var(chars: &[char], start: usize) -> Result<(Part, usize), String> {
    if chars.get(start) == Some(&':') {
        return Err("sub-expressions `%{:...:}` are not supported".into());
    }
    let name: String = chars.iter().skip(start).take_while(|c| c.is_ascii_alphanumeric() || **c == '_').collect();
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Err("a variable `%{` must start with a name".into());
    }
    let mut i = start + name.len();
    match chars.get(i) {
        // mod_ssl's variables: the host sets them on TLS requests (empty otherwise, as in httpd).
        Some('}') if name.eq_ignore_ascii_case("HTTPS") => Ok((Part::Https(EnvRef::new("HTTPS")), i + 1)),
        Some('}') if TLS_VARIABLES.iter().any(|v| name.eq_ignore_ascii_case(v)) => {
            Ok((Part::Env(EnvRef::new(name.to_ascii_uppercase())), i + 1))
        }
        Some('}') => {
            let var = VARIABLES.iter().find(|(n, _)| n.eq_ignore_ascii_case(&name)).map(|(_, v)| *v);
            match var {
                Some(var) => Ok((Part::Var(var), i + 1)),
                None => Err(format!(
                    "unsupported variable `%{{{name}}}` (supported: {})",
                    VARIABLES.iter().map(|(n, _)| format!("%{{{n}}}")).collect::<Vec<_>>().join(", ")
                )),
            }
        }
        Some(':') => {
            i += 1;
            let mut arg = String::new();
            loop {
                match chars.get(i).copied() {
                    None => return Err(format!("unterminated variable `%{{{name}:{arg}`")),
                    Some('}') => break,
                    Some(c @ ('\\' | '%' | '$')) => {
                        return Err(format!("`{c}` in the argument of `%{{{name}:...}}` is not supported"));
                    }
                    Some(c) => arg.push(c),
                }
                i += 1;
            }
            Ok((function(&name, arg)?, i + 1))
        }
        Some(c) => Err(format!("unexpected character `{c}` in variable `%{{{name}`")),
        None => Err(format!("unterminated variable `%{{{name}`")),
    }
}

/// A regex literal starting after its opening delimiter; returns it and the index after it.
fn lex_regex(chars: &[char], start: usize, delimiter: char) -> Result<(Tok, usize), String> {
    let body: String = chars.iter().skip(start).take_while(|c| **c != delimiter).collect();
    let mut i = start + body.chars().count();
    if chars.get(i).is_none() {
        return Err(format!("unterminated regex (missing closing {delimiter})"));
    }
    i += 1;
    let mut icase = false;
    while let Some(&flag) = chars.get(i).filter(|c| c.is_ascii_alphanumeric()) {
        if flag != 'i' {
            return Err(format!("unsupported regex flag `{flag}` (only `i` is supported)"));
        }
        icase = true;
        i += 1;
    }
    Ok((Tok::Regex { source: body, icase }, i))
}

/// A string function applied to a constant argument.
fn function(name: &str, arg: String) -> Result<Part, String> {
    match name.to_ascii_lowercase().as_str() {
        "env" => Ok(Part::Env(EnvRef::new(arg))),
        "req" | "http" => Ok(Part::RequestHeader(arg)),
        "resp" => Ok(Part::ResponseHeader(arg)),
        _ => Err(format!("unsupported function `{name}` (supported: env, req, http, resp)")),
    }
}

// ---------------------------------------------------------------------------------------------
// Parser (util_expr_parse.y)

struct Parser {
    tokens: Vec<Tok>,
    pos: usize,
    depth: usize,
    operators: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let tok = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        tok
    }

    fn operator(&mut self) -> Result<(), String> {
        self.operators += 1;
        if self.operators > MAX_OPERATORS {
            return Err(format!("expression too long (more than {MAX_OPERATORS} operators)"));
        }
        Ok(())
    }

    fn nested<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T, String>) -> Result<T, String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(format!("expression nested too deeply (more than {MAX_DEPTH} levels)"));
        }
        let result = f(self);
        self.depth -= 1;
        result
    }

    fn expect(&mut self, want: &Tok, context: &str) -> Result<(), String> {
        match self.next() {
            Some(tok) if tok == *want => Ok(()),
            Some(tok) => Err(format!("expected {} {context}, found {}", want.describe(), tok.describe())),
            None => Err(format!("expected {} {context}, found the end", want.describe())),
        }
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut left = self.and()?;
        while self.peek() == Some(&Tok::Or) {
            self.next();
            self.operator()?;
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut left = self.not()?;
        while self.peek() == Some(&Tok::And) {
            self.next();
            self.operator()?;
            left = Expr::And(Box::new(left), Box::new(self.not()?));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Expr, String> {
        if self.peek() == Some(&Tok::Not) {
            self.next();
            self.operator()?;
            return self.nested(|p| Ok(Expr::Not(Box::new(p.not()?))));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, String> {
        match self.next() {
            Some(Tok::True) => Ok(Expr::Const(true)),
            Some(Tok::False) => Ok(Expr::Const(false)),
            Some(Tok::LParen) => {
                let inner = self.nested(Self::or)?;
                self.expect(&Tok::RParen, "to close `(`")?;
                Ok(inner)
            }
            Some(Tok::Unary(op)) => {
                let word = self.word_after(&format!("`-{op}`"))?;
                match op {
                    'z' => Ok(Expr::IsEmpty(word)),
                    'n' => Ok(Expr::NotEmpty(word)),
                    _ => Err(format!("unary operator `-{op}` is not supported (supported: -z, -n)")),
                }
            }
            Some(tok) if starts_word(&tok) => {
                let word = self.word(tok)?;
                self.comparison(word)
            }
            Some(tok) => Err(format!("unexpected {}", tok.describe())),
            None => Err("the expression is empty or ends too early".into()),
        }
    }

    fn comparison(&mut self, left: Word) -> Result<Expr, String> {
        match self.next() {
            Some(Tok::Eq) => Ok(Expr::Equals { left, right: self.word_after("`==`")?, negate: false }),
            Some(Tok::Ne) => Ok(Expr::Equals { left, right: self.word_after("`!=`")?, negate: true }),
            Some(op @ (Tok::Match | Tok::NoMatch)) => match self.next() {
                Some(Tok::Regex { source, icase }) => {
                    let regex = pattern::compile(&source, icase)?;
                    Ok(Expr::Matches { word: left, regex, negate: op == Tok::NoMatch })
                }
                _ => Err(format!("{} must be followed by a regex: /.../ or m#...#", op.describe())),
            },
            Some(Tok::Binary(name)) if name.eq_ignore_ascii_case("ipmatch") => {
                let right = self.word_after("`-ipmatch`")?;
                let Some(text) = right.constant() else {
                    return Err("-ipmatch needs a constant subnet such as '10.0.0.0/8'".into());
                };
                Ok(Expr::IpMatch { word: left, subnet: Subnet::parse(&text)? })
            }
            Some(Tok::Binary(name)) => {
                Err(format!("operator `-{name}` is not supported (supported: ==, !=, =~, !~, -ipmatch)"))
            }
            Some(Tok::Unsupported(op)) => {
                Err(format!("operator `{op}` is not supported (supported: ==, !=, =~, !~, -ipmatch)"))
            }
            Some(tok) => Err(format!("expected a comparison operator after a word, found {}", tok.describe())),
            None => Err("expected a comparison operator after a word, found the end".into()),
        }
    }

    fn word_after(&mut self, what: &str) -> Result<Word, String> {
        match self.next() {
            Some(tok) if starts_word(&tok) => self.word(tok),
            Some(tok) => Err(format!("expected a string or variable after {what}, found {}", tok.describe())),
            None => Err(format!("expected a string or variable after {what}, found the end")),
        }
    }

    /// `part ('.' part)*`, the first part's token already taken.
    fn word(&mut self, first: Tok) -> Result<Word, String> {
        let mut parts = self.part(first)?;
        while self.peek() == Some(&Tok::Concat) {
            self.next();
            match self.next() {
                Some(tok) if starts_word(&tok) => parts.extend(self.part(tok)?),
                _ => return Err("`.` must be followed by a string or variable".into()),
            }
        }
        Ok(Word(parts))
    }

    fn part(&mut self, tok: Tok) -> Result<Vec<Part>, String> {
        match tok {
            Tok::Str(parts) => Ok(parts),
            Tok::Digits(digits) => Ok(vec![Part::Text(digits)]),
            Tok::Var(part) => Ok(vec![part]),
            Tok::Ident(name) => {
                if self.peek() != Some(&Tok::LParen) {
                    return Err(format!("unexpected `{name}` (strings must be quoted)"));
                }
                self.next();
                let arg = self.nested(|p| p.word_after(&format!("`{name}(`")))?;
                self.expect(&Tok::RParen, &format!("to close `{name}(`"))?;
                let Some(arg) = arg.constant() else {
                    return Err(format!("the argument of `{name}()` must be a constant string"));
                };
                Ok(vec![function(&name, arg)?])
            }
            other => Err(format!("unexpected {}", other.describe())),
        }
    }
}

fn starts_word(tok: &Tok) -> bool {
    matches!(tok, Tok::Str(_) | Tok::Digits(_) | Tok::Var(_) | Tok::Ident(_))
}

// ---------------------------------------------------------------------------------------------
// Subnets (apr_ipsubnet_create / apr_ipsubnet_test)

/// A subnet for `-ipmatch`; the network is stored with its host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subnet {
    V4 { net: u32, mask: u32 },
    V6 { net: u128, mask: u128 },
}

impl Subnet {
    /// What `apr_ipsubnet_create` accepts: `addr`, `addr/bits` (1–32 or 1–128), `v4/netmask`,
    /// or a partial IPv4 network without a mask (`10`, `10.1.`, `10.1.2`).
    pub fn parse(text: &str) -> Result<Subnet, String> {
        let bad = || format!("-ipmatch: bad subnet `{text}` (expected an address or CIDR such as '10.0.0.0/8')");
        let (addr, mask) = match text.split_once('/') {
            Some((addr, mask)) => (addr, Some(mask)),
            None => (text, None),
        };
        let looks_like_ip =
            !addr.is_empty() && (addr.contains(':') || addr.chars().all(|c| c == '.' || c.is_ascii_digit()));
        if !looks_like_ip {
            return Err(bad());
        }
        let subnet = if let Ok(v6) = addr.parse::<Ipv6Addr>() {
            if v6.to_ipv4_mapped().is_some() {
                return Err(format!("-ipmatch: write the IPv4-mapped address `{text}` as plain IPv4"));
            }
            Subnet::V6 { net: u128::from(v6), mask: u128::MAX }
        } else if let Ok(v4) = addr.parse::<Ipv4Addr>() {
            Subnet::V4 { net: u32::from(v4), mask: u32::MAX }
        } else if mask.is_none() {
            partial_network(addr).ok_or_else(bad)?
        } else {
            return Err(bad());
        };
        let subnet = match (subnet, mask) {
            (subnet, None) => subnet,
            (Subnet::V4 { net, .. }, Some(mask)) => {
                let mask = match mask.parse::<u32>() {
                    Ok(bits @ 1..=32) => u32::MAX << (32 - bits),
                    _ => u32::from(mask.parse::<Ipv4Addr>().map_err(|_| bad())?),
                };
                Subnet::V4 { net, mask }
            }
            (Subnet::V6 { net, .. }, Some(mask)) => match mask.parse::<u32>() {
                Ok(bits @ 1..=128) => Subnet::V6 { net, mask: u128::MAX << (128 - bits) },
                _ => return Err(bad()),
            },
        };
        Ok(match subnet {
            Subnet::V4 { net, mask } => Subnet::V4 { net: net & mask, mask },
            Subnet::V6 { net, mask } => Subnet::V6 { net: net & mask, mask },
        })
    }

    /// Whether `addr` (an IP address as text) is in the subnet; anything else is not.
    pub fn contains(&self, addr: &str) -> bool {
        let Ok(ip) = addr.trim().parse::<IpAddr>() else { return false };
        match (self, ip) {
            (Subnet::V4 { net, mask }, IpAddr::V4(v4)) => u32::from(v4) & mask == *net,
            (Subnet::V4 { net, mask }, IpAddr::V6(v6)) => {
                v6.to_ipv4_mapped().is_some_and(|v4| u32::from(v4) & mask == *net)
            }
            (Subnet::V6 { net, mask }, IpAddr::V6(v6)) => {
                v6.to_ipv4_mapped().is_none() && u128::from(v6) & mask == *net
            }
            (Subnet::V6 { .. }, IpAddr::V4(_)) => false,
        }
    }
}

/// httpd's legacy `a.b.c.` networks: each given octet is masked, the rest are wildcards.
fn partial_network(text: &str) -> Option<Subnet> {
    let octets: Vec<&str> = text.strip_suffix('.').unwrap_or(text).split('.').collect();
    if octets.len() > 4 {
        return None;
    }
    let mut net = 0u32;
    let mut mask = 0u32;
    for (i, octet) in octets.iter().enumerate() {
        if octet.is_empty() || !octet.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let value: u8 = octet.parse().ok()?;
        let shift = 24 - 8 * u32::try_from(i).ok()?;
        net |= u32::from(value) << shift;
        mask |= 0xff << shift;
    }
    Some(Subnet::V4 { net, mask })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::{Env, HeaderTable, Request};

    fn eval(source: &str) -> bool {
        let request = Request {
            method: "GET",
            path: "/a/b",
            query: "x=1",
            client_addr: "10.1.2.3",
            host: "www.example.com",
            ..Request::default()
        };
        let request_lines = [
            ("x-forwarded-for".into(), "1.2.3.4".into()),
            ("accept".into(), "a".into()),
            ("accept".into(), "b".into()),
        ];
        let vars = [("FORWARD_IP".into(), "1.2.3.4".into()), ("EMPTY".into(), String::new())];
        let env = Env::new(&vars);
        let request_headers = HeaderTable::new(&request_lines);
        let response_lines = [("set-cookie".into(), "a=1".into()), ("set-cookie".into(), "b=2".into())];
        let response_headers = HeaderTable::new(&response_lines);
        let ctx =
            Ctx { request, env: &env, request_headers: &request_headers, response_headers: Some(&response_headers) };
        parse(source).unwrap_or_else(|e| panic!("{source}: {e}")).eval(&ctx)
    }

    #[test]
    fn conditions_evaluate_as_in_httpd() {
        let cases: &[(&str, bool)] = &[
            ("true", true),
            ("false", false),
            ("-z env('FORWARD_IP')", false),
            ("-n env('FORWARD_IP')", true),
            ("-z env('NOPE')", true),
            ("-z env('EMPTY')", true),
            ("-z env('forward_ip')", false),
            ("-n %{env:FORWARD_IP}", true),
            ("env('FORWARD_IP') == '1.2.3.4'", true),
            ("env('FORWARD_IP') = \"1.2.3.4\"", true),
            ("env('FORWARD_IP') != '1.2.3.4'", false),
            ("req('X-Forwarded-For') == '1.2.3.4'", true),
            ("http('accept') == 'a, b'", true),
            ("%{HTTP:Accept} == 'a, b'", true),
            ("resp('Set-Cookie') == 'a=1'", true),
            ("-z req('Absent')", true),
            ("%{REMOTE_ADDR} == '10.1.2.3'", true),
            ("%{remote_addr} == '10.1.2.3'", true),
            ("%{REQUEST_METHOD} == 'GET'", true),
            ("%{REQUEST_URI} == '/a/b'", true),
            ("%{HTTP_HOST} == 'www.example.com'", true),
            ("%{QUERY_STRING} == 'x=1'", true),
            ("%{HTTPS} == 'off'", true),
            ("%{https} == 'on'", false),
            ("-z %{SSL_PROTOCOL}", true),
            ("%{SSL_CIPHER} == ''", true),
            ("'%{REQUEST_METHOD} %{REQUEST_URI}' == 'GET /a/b'", true),
            ("%{REQUEST_METHOD} . ':' . %{REQUEST_URI} == 'GET:/a/b'", true),
            ("%{REQUEST_URI} =~ m#^/a/#", true),
            ("%{REQUEST_URI} =~ /^.a.b$/", true),
            ("%{REQUEST_URI} =~ /^.A/i", true),
            ("%{REQUEST_URI} =~ /^.A/", false),
            ("%{REQUEST_URI} =~ m#^/A/#i", true),
            ("%{REQUEST_URI} !~ m#^/A/#", true),
            ("%{REQUEST_METHOD} =~ m,^(GET|HEAD)$,", true),
            ("%{REMOTE_ADDR} -ipmatch '10.0.0.0/8'", true),
            ("%{REMOTE_ADDR} -ipmatch '10.1'", true),
            ("%{REMOTE_ADDR} -ipmatch '10.2.'", false),
            ("%{REMOTE_ADDR} -ipmatch '10.1.0.0/255.255.0.0'", true),
            ("%{REMOTE_ADDR} -ipmatch '192.168.0.0/16'", false),
            ("%{REMOTE_ADDR} -ipmatch '::/1'", false),
            ("'::ffff:10.1.2.3' -ipmatch '10.0.0.0/8'", true),
            ("'2001:db8::1' -ipmatch '2001:db8::/32'", true),
            ("'2001:db9::1' -ipmatch '2001:db8::/32'", false),
            ("'not an ip' -ipmatch '10.0.0.0/8'", false),
            ("12 == '12'", true),
            ("-1 == '-1'", true),
            ("'a\\'b' == \"a'b\"", true),
            ("'\\x41\\101' == 'AA'", true),
            ("!true || true", true),
            ("!(true || true)", false),
            ("! -z env('FORWARD_IP')", true),
            ("!-z env('FORWARD_IP') && false", false),
            ("true || false && false", true),
            ("(true || false) && false", false),
            ("false && false || true", true),
            ("!false && !false", true),
            ("!!true", true),
            ("!'a' == 'b'", true), // `!` takes the comparison, as in httpd's grammar
        ];
        for (source, expected) in cases {
            assert_eq!(eval(source), *expected, "{source}");
        }
    }

    #[test]
    fn bad_expressions_are_refused_with_a_reason() {
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            ("-z", "after `-z`"),
            ("env('X')", "comparison operator"),
            ("'a' < 'b'", "operator `<` is not supported"),
            ("1 -eq 1", "operator `-eq` is not supported"),
            ("'a' -in {'a'}", "word lists"),
            ("-f '/etc/passwd'", "unary operator `-f` is not supported"),
            ("-z env(X)", "strings must be quoted"),
            ("-z env(%{REMOTE_ADDR})", "constant string"),
            ("-z md5('x')", "unsupported function `md5`"),
            ("-z %{SERVER_NAME}", "unsupported variable `%{SERVER_NAME}`"),
            ("-z %{REMOTE_ADDR", "unterminated variable"),
            ("%{REQUEST_URI} =~ /^\\/a/", "regex"), // the delimiter cannot be escaped, as in httpd
            ("-z 'abc", "unterminated string"),
            ("'a' =~ /abc", "unterminated regex"),
            ("'a' =~ /abc/x", "unsupported regex flag `x`"),
            ("'a' =~ 'abc'", "must be followed by a regex"),
            ("'a' =~ /(a)\\1/", "backreferences"),
            ("'a' == '$1'", "back-references"),
            ("(true", "to close `(`"),
            ("true)", "after a complete expression"),
            ("true &&", "ends too early"),
            ("%{REMOTE_ADDR} -ipmatch 'example.com'", "bad subnet"),
            ("%{REMOTE_ADDR} -ipmatch %{REMOTE_ADDR}", "constant subnet"),
            ("-z %{:true:}", "sub-expressions"),
            ("a and b", "strings must be quoted"),
        ];
        for (source, needle) in cases {
            let err = parse(source).err().unwrap_or_else(|| panic!("{source} parsed"));
            assert!(err.contains(needle), "{source}: {err}");
        }
    }

    #[test]
    fn nesting_and_length_are_bounded() {
        let deep = format!("{}true{}", "(".repeat(MAX_DEPTH + 1), ")".repeat(MAX_DEPTH + 1));
        assert!(parse(&deep).unwrap_err().contains("nested too deeply"));
        let long = vec!["true"; MAX_OPERATORS + 2].join(" && ");
        assert!(parse(&long).unwrap_err().contains("too long"));
        let nots = format!("{}true", "!".repeat(MAX_DEPTH + 1));
        assert!(parse(&nots).is_err());
    }

    #[test]
    fn subnets_parse_like_apr() {
        let v4 =
            |net: [u8; 4], bits: u32| Subnet::V4 { net: u32::from(Ipv4Addr::from(net)), mask: u32::MAX << (32 - bits) };
        let cases: &[(&str, Option<Subnet>)] = &[
            ("10.0.0.0/8", Some(v4([10, 0, 0, 0], 8))),
            ("10.9.8.7/8", Some(v4([10, 0, 0, 0], 8))), // host bits cleared
            ("10.1.2.3", Some(v4([10, 1, 2, 3], 32))),
            ("10", Some(v4([10, 0, 0, 0], 8))),
            ("10.1.", Some(v4([10, 1, 0, 0], 16))),
            ("10.1.2", Some(v4([10, 1, 2, 0], 24))),
            ("10.0.0.0/255.0.0.0", Some(v4([10, 0, 0, 0], 8))),
            ("::1", Some(Subnet::V6 { net: 1, mask: u128::MAX })),
            ("10.0.0.0/0", None),
            ("10.0.0.0/33", None),
            ("10.1/16", None),
            ("1.2.3.4.5", None),
            ("256", None),
            ("..", None),
            ("example.com", None),
            ("", None),
            ("::/129", None),
            ("::ffff:10.0.0.1", None),
        ];
        for (text, expected) in cases {
            assert_eq!(Subnet::parse(text).ok(), *expected, "{text}");
        }
    }

    #[test]
    fn reads_are_declared() {
        let mut reads = Reads::default();
        parse("req('X-A') == resp('X-B') || %{REMOTE_ADDR} -ipmatch '10.1' || %{QUERY_STRING} . %{HTTP_HOST} == %{REQUEST_URI} . %{REQUEST_METHOD} || -n %{http:X-C} || -n env('E')")
            .unwrap()
            .reads(&mut reads);
        let needs = reads.into_needs();
        assert_eq!(needs.request_headers(), ["x-a", "x-c"]);
        assert_eq!(needs.response_headers(), ["x-b"]);
        assert_eq!(needs.env_vars(), ["E"]);
        assert_eq!(
            needs.fields(),
            RequestFields::CLIENT_ADDR
                | RequestFields::QUERY
                | RequestFields::HOST
                | RequestFields::PATH
                | RequestFields::METHOD
        );
    }
}
