//! Property tests (bounded fuzzing) of the directive, expression, format and pattern parsers:
//! arbitrary text and grammar-shaped text with random edits never panic, errors name a line that
//! holds a directive, and whatever compiles runs on random requests without panicking.
//!
//! Each test runs a few hundred cases by default; `PROPTEST_CASES=100000 cargo test --manifest-path
//! plugins/Cargo.toml --test fuzz` runs a longer campaign, and `PROPTEST_RNG_SEED=N` repeats one.

use apache_rules::context::{Ctx, Env, HeaderTable, Request};
use apache_rules::testing::*;
use apache_rules::{directive, expr, format, parse, pattern};
use proptest::prelude::*;
use proptest::test_runner::Config;

/// `cases` unless `PROPTEST_CASES` says otherwise; no regression files are written.
fn config(cases: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(cases);
    Config { cases, failure_persistence: None, ..Config::default() }
}

// ---- generators ----------------------------------------------------------------------------

/// Characters that matter to the parsers, plus some that should not.
const INTERESTING: &[char] = &[
    ' ',
    '\t',
    '\n',
    '\r',
    '\\',
    '"',
    '\'',
    '%',
    '{',
    '}',
    '<',
    '>',
    '/',
    '!',
    '=',
    '~',
    '(',
    ')',
    '[',
    ']',
    '$',
    '^',
    '.',
    '*',
    '+',
    '?',
    '|',
    '&',
    ',',
    ';',
    ':',
    '#',
    '-',
    '0',
    '1',
    '9',
    'a',
    'e',
    'i',
    'o',
    's',
    't',
    'D',
    'x',
    '\0',
    '\u{b}',
    '\u{c}',
    'é',
    '١',
    '\u{fffd}',
    '\u{10ffff}',
];

fn interesting_char() -> impl Strategy<Value = char> {
    prop_oneof![3 => proptest::sample::select(INTERESTING), 1 => any::<char>()]
}

/// Short strings made mostly of [`INTERESTING`] characters.
fn noise(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(interesting_char(), 0..max).prop_map(|v| v.into_iter().collect())
}

/// One random edit of a text: insert, delete, duplicate a slice, or truncate.
#[derive(Debug, Clone)]
enum Edit {
    Insert(usize, String),
    Delete(usize, usize),
    Duplicate(usize, usize),
    Truncate(usize),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let edit = prop_oneof![
        3 => (any::<usize>(), noise(4)).prop_map(|(at, s)| Edit::Insert(at, s)),
        2 => (any::<usize>(), 1..8usize).prop_map(|(at, n)| Edit::Delete(at, n)),
        1 => (any::<usize>(), 1..16usize).prop_map(|(at, n)| Edit::Duplicate(at, n)),
        1 => any::<usize>().prop_map(Edit::Truncate),
    ];
    proptest::collection::vec(edit, 0..4)
}

/// Apply `edits` to `text`, at character boundaries.
fn mutate(text: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for edit in edits {
        let len = chars.len();
        let pos = |at: usize| if len == 0 { 0 } else { at % (len + 1) };
        match edit {
            Edit::Insert(at, s) => {
                let at = pos(*at);
                chars.splice(at..at, s.chars());
            }
            Edit::Delete(at, n) => {
                let at = pos(*at);
                let end = (at + n).min(len);
                chars.drain(at..end);
            }
            Edit::Duplicate(at, n) => {
                let at = pos(*at);
                let end = (at + n).min(len);
                let slice: Vec<char> = chars[at..end].to_vec();
                chars.splice(end..end, slice);
            }
            Edit::Truncate(at) => chars.truncate(pos(*at)),
        }
    }
    chars.into_iter().collect()
}

fn pick(options: &'static [&'static str]) -> impl Strategy<Value = String> {
    proptest::sample::select(options).prop_map(str::to_string)
}

/// An ap_expr word: strings, variables, functions, digits, concatenations.
fn expr_word() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        pick(&[
            "'abc'",
            "\"a %{REMOTE_ADDR} b\"",
            "'\\x41\\101\\n\\t\\''",
            "%{REQUEST_URI}",
            "%{HTTP_HOST}",
            "%{QUERY_STRING}",
            "%{REQUEST_METHOD}",
            "%{env:FORWARD_IP}",
            "%{UNKNOWN}",
            "env('FORWARD_IP')",
            "ENV('x')",
            "req('Host')",
            "http('X-Forwarded-For')",
            "resp('Content-Type')",
            "req(%{REQUEST_URI})",
            "123",
            "''",
            "\"\"",
        ]),
        "[a-zA-Z0-9 %{}()'\"\\\\.]{0,8}".prop_map(|s| format!("'{s}'")),
    ];
    leaf.prop_recursive(2, 6, 2, |inner| (inner.clone(), inner).prop_map(|(a, b)| format!("{a}.{b}")))
}

fn expr_regex() -> impl Strategy<Value = String> {
    let body = prop_oneof![
        pick(&["^/app", "(\\d+)\\.(\\d+)", "[a-z]*", "x{2,3}", "(?i)ab", "a|b|", "\\", "(", "[", "\\1", "(?=x)"]),
        "[a-z^$.*+?()\\[\\]|\\\\{}0-9]{0,10}",
    ];
    let delims = pick(&["/", "m/", "m#", "m|", "m!", "m,", "m_", "m\"", "m'"]);
    (body, delims, any::<bool>()).prop_map(|(body, delim, icase)| {
        let close = delim.chars().last().unwrap_or('/');
        format!("{delim}{body}{close}{}", if icase { "i" } else { "" })
    })
}

/// A grammar-shaped ap_expr.
fn expression() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        pick(&["true", "false"]),
        expr_word().prop_map(|w| format!("-z {w}")),
        expr_word().prop_map(|w| format!("-n {w}")),
        (expr_word(), pick(&["==", "=", "!="]), expr_word()).prop_map(|(a, op, b)| format!("{a} {op} {b}")),
        (expr_word(), pick(&["=~", "!~"]), expr_regex()).prop_map(|(a, op, r)| format!("{a} {op} {r}")),
        (
            expr_word(),
            pick(&["'10.1'", "'10.0.0.0/8'", "'10.0.0.0/255.0.0.0'", "'::1/64'", "'1.2.3.4/33'", "'x'", "'fe80::/10'"])
        )
            .prop_map(|(w, n)| format!("{w} -ipmatch {n}")),
        (expr_word(), pick(&["-eq", "<", "-in", "-strmatch", "-R", "-f"]), expr_word())
            .prop_map(|(a, op, b)| format!("{a} {op} {b}")),
    ];
    leaf.prop_recursive(4, 24, 2, |inner| {
        prop_oneof![
            inner.clone().prop_map(|e| format!("!{e}")),
            inner.clone().prop_map(|e| format!("({e})")),
            (inner.clone(), pick(&["&&", "||"]), inner).prop_map(|(a, op, b)| format!("{a} {op} {b}")),
        ]
    })
}

/// A mod_headers value format.
fn format_string() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        pick(&[
            "%{FORWARD_IP}e",
            "%{REMOTE_ADDR}s",
            "%{SSL_X}s",
            "%{Host}i",
            "%{Content-Type}o",
            "%t",
            "%D",
            "%%",
            "%",
            "%{}e",
            "%{X}",
            "%{X",
            "%x",
            "%l",
            "%b",
            "\\t",
            "\\\\",
            "\\n",
            "\\r",
            "\\q",
        ]),
        "[a-zA-Z0-9 =;/.,_-]{0,8}",
    ];
    proptest::collection::vec(piece, 0..6).prop_map(|v| v.concat())
}

/// Quote a word the way a user would, sometimes not at all.
fn quoted(word: String, style: u8) -> String {
    match style % 4 {
        0 if !word.is_empty() && !word.contains(parse::is_space) => word,
        0 | 1 => format!("\"{}\"", word.replace('\\', "\\\\").replace('"', "\\\"")),
        2 => format!("'{}'", word.replace('\\', "\\\\").replace('\'', "\\'")),
        _ => format!("\"{word}\""),
    }
}

fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        pick(&["X-Forwarded-For", "Set-Cookie", "X-Balance", "Host", "user-agent", "X-A:", "Bad Name", "X(", ""]),
        "[A-Za-z0-9-]{1,10}",
    ]
}

/// One directive line, grammar-shaped.
fn directive_line() -> impl Strategy<Value = String> {
    let attribute = prop_oneof![
        pick(&["Remote_Addr", "Remote_Host", "Server_Addr", "Request_Method", "Request_Protocol", "Request_URI"]),
        header_name(),
        pick(&["^X-.*", "X-(A|B)"]),
    ];
    let regex = prop_oneof![
        pick(&["(([\\d]{1,3}\\.?){4})", "^Mozilla/(\\d)", "mozilla", "^$", ".", "\\.", "(", "a{", "\\1", "x\\"]),
        "[a-z^$.*+?()\\[\\]|\\\\{}0-9]{0,10}",
    ];
    let assignment = prop_oneof![
        pick(&["FORWARD_IP=$1", "A", "!B", "C=", "=x", "!", "D=x$0y", "E=\\$1", "F=$9$"]),
        "[A-Z_]{1,6}(=[a-z$0-9\\\\]{0,5})?",
    ];
    let setenvif = (
        pick(&["SetEnvIf", "SetEnvIfNoCase", "setenvif"]),
        attribute,
        regex,
        proptest::collection::vec(assignment, 0..4),
        any::<u8>(),
    )
        .prop_map(|(d, a, r, vars, q)| format!("{d} {a} {} {}", quoted(r, q), vars.join(" ")));
    let clause = prop_oneof![
        Just(String::new()),
        pick(&["env=BALANCER_ROUTE_CHANGED", "env=!X", "env=", "env=!", "early", "bogus=1"]),
        (expression(), any::<u8>()).prop_map(|(e, q)| quoted(format!("expr={e}"), q)),
    ];
    let header = (
        pick(&["Header", "RequestHeader", "Header always", "Header onsuccess", "header ALWAYS"]),
        pick(&["set", "append", "add", "unset", "merge", "setifempty", "edit", "edit*", "echo", "note", "bogus"]),
        header_name(),
        proptest::option::of((format_string(), any::<u8>()).prop_map(|(f, q)| quoted(f, q))),
        proptest::option::of((format_string(), any::<u8>()).prop_map(|(f, q)| quoted(f, q))),
        clause,
    )
        .prop_map(|(d, action, name, value, replacement, clause)| {
            let mut line = format!("{d} {action} {name}");
            for word in [value, replacement].into_iter().flatten() {
                line.push(' ');
                line.push_str(&word);
            }
            if !clause.is_empty() {
                line.push(' ');
                line.push_str(&clause);
            }
            line
        });
    let section = prop_oneof![
        (expression(), any::<u8>()).prop_map(|(e, q)| format!("<If {}>", quoted(e, q))),
        (expression(), any::<u8>()).prop_map(|(e, q)| format!("<ElseIf {}>", quoted(e, q))),
        pick(&["<Else>", "</If>", "</ElseIf>", "</Else>", "<If>", "<Else x>", "<Location />", "</If", "<If \"true\""]),
    ];
    prop_oneof![
        3 => setenvif,
        4 => header,
        3 => section,
        1 => pick(&["", "# comment", "  # indented", "Unknown directive", "ProxyPass / x", "\\"]),
    ]
}

/// A directives text: grammar-shaped lines (with balanced sections often enough), then edits.
fn directives_text() -> impl Strategy<Value = String> {
    let indent = pick(&["", "  ", "\t"]);
    let ending = pick(&["\n", "\n", "\r\n", " \\\n"]);
    (proptest::collection::vec((indent, directive_line(), ending), 0..12), any::<bool>(), edits()).prop_map(
        |(lines, balance, edits)| {
            let mut text = String::new();
            let mut open = 0usize;
            for (indent, line, ending) in lines {
                if balance {
                    // Keep sections mostly balanced so that the compile gets past them.
                    if line.starts_with("<If ") {
                        open += 1;
                    } else if line.starts_with("</") {
                        if open == 0 {
                            continue;
                        }
                        open -= 1;
                    }
                }
                text.push_str(&indent);
                text.push_str(&line);
                text.push_str(&ending);
            }
            if balance {
                for _ in 0..open {
                    text.push_str("</If>\n");
                }
            }
            mutate(&text, &edits)
        },
    )
}

/// A request with random parts: odd methods, paths, header names and values, client addresses
/// (each as the host can hold it: no control characters but tab).
fn request() -> impl Strategy<Value = RequestView> {
    let header = (
        prop_oneof![pick(&["x-forwarded-for", "host", "user-agent", "x-a", "content-type", "cookie"]), "[a-z-]{1,8}"],
        prop_oneof![
            pick(&["1.2.3.4", "10.0.0.1, 192.168.1.2", "Mozilla/5.0", "", "é١", "999.999.999.999.1"]),
            noise(12).prop_map(|v| header_value(&v)),
        ],
    );
    (
        pick(&["GET", "POST", "", "M-SEARCH"]),
        prop_oneof![pick(&["/", "/app/x", "//a/../b", "/%2F"]), noise(10).prop_map(|v| header_value(&v))],
        prop_oneof![pick(&["", "a=1", "BALANCEID=x.web1"]), noise(6).prop_map(|v| header_value(&v))],
        prop_oneof![
            pick(&["10.0.0.7", "::1", "fe80::1%eth0", "", "not-an-ip"]),
            noise(6).prop_map(|v| header_value(&v))
        ],
        prop_oneof![pick(&["www.example.com", "", "[::1]:80"]), noise(6).prop_map(|v| header_value(&v))],
        proptest::collection::vec(header, 0..5),
    )
        .prop_map(|(method, path, query, client_addr, host, headers)| RequestView {
            method,
            path,
            query,
            client_addr,
            host,
            headers,
        })
}

fn env_pairs() -> impl Strategy<Value = Vec<(String, String)>> {
    let name = prop_oneof![
        pick(&["FORWARD_IP", "BALANCER_ROUTE_CHANGED", "BALANCER_WORKER_ROUTE", "X", "B", "forward_ip"]),
        "[A-Z_]{1,5}",
    ];
    // Line breaks can reach the environment (httpd unwraps them when it renders a value).
    let value = prop_oneof![
        pick(&["1", "", "web1", "line\nbreak", "cr\rhere", "123456"]),
        noise(8).prop_map(|v| header_value(&v))
    ];
    proptest::collection::vec((name, value), 0..4)
}

fn response() -> impl Strategy<Value = ResponseView> {
    let header = (
        prop_oneof![pick(&["content-type", "set-cookie", "x-balance", "x-a"]), "[a-z-]{1,8}"],
        prop_oneof![pick(&["text/html", "", "a, b"]), noise(8).prop_map(|v| header_value(&v))],
    );
    (any::<u16>(), any::<bool>(), proptest::collection::vec(header, 0..4)).prop_map(|(status, proxied, headers)| {
        ResponseView {
            status,
            origin: if proxied { ResponseOrigin::Proxied } else { ResponseOrigin::Generated },
            headers,
        }
    })
}

/// What a header value received by the host can hold: no control characters but tab.
fn header_value(text: &str) -> String {
    text.chars().filter(|&c| c == '\t' || !c.is_ascii_control()).collect()
}

// ---- checks --------------------------------------------------------------------------------

/// The `line N: ` of a compile error names a physical line of `text` that holds a directive.
fn check_error_line(text: &str, error: &directive::ConfigError) -> Result<(), TestCaseError> {
    let physical: Vec<&str> = text.split('\n').collect();
    prop_assert!(
        error.line >= 1 && error.line <= physical.len(),
        "line {} out of 1..={} for {text:?}: {error}",
        error.line,
        physical.len()
    );
    let line = physical[error.line - 1].trim_matches(parse::is_space);
    prop_assert!(
        !line.is_empty() && !line.starts_with('#'),
        "error on a blank or comment line {}: {error}",
        error.line
    );
    let prefix = format!("line {}: ", error.line);
    prop_assert!(error.to_string().starts_with(&prefix), "{error}");
    Ok(())
}

/// What the host would refuse to put in a header value (hyper's `HeaderValue::from_str`).
fn bad_header_value(value: &str) -> bool {
    value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f)
}

fn configure(text: &str) -> Result<(apache_rules::ApacheRules, Needs), PluginError> {
    let config = PluginConfig {
        name: "apache-rules".into(),
        options: vec![(apache_rules::DIRECTIVES.into(), text.into())],
        toml: String::new(),
    };
    apache_rules::ApacheRules::configure(&config)
}

/// Run a compiled rule set on a request and a response; header names and values it asks the host
/// to set must be ones the host can send.
fn run_rules(
    text: &str,
    rules: &mut apache_rules::ApacheRules,
    req: &RequestView,
    resp: &ResponseView,
    env: &[(String, String)],
) -> Result<(), TestCaseError> {
    let request_outcome = rules.on_request(req, env);
    let response_outcome = rules.on_response(req, resp, env);
    for action in request_outcome.headers.iter().chain(&response_outcome.headers) {
        prop_assert!(
            !bad_header_value(&action.value),
            "rules {text:?} on {req:?} / env {env:?} produce header {:?} value {:?}",
            action.name,
            action.value
        );
    }
    Ok(())
}

// ---- properties ----------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn words_and_lines_never_panic(text in noise(64)) {
        let lines = parse::logical_lines(&text);
        let physical = text.split('\n').count();
        let mut last = 0;
        for line in &lines {
            prop_assert!(line.number > last && line.number <= physical, "{lines:?}");
            last = line.number;
            prop_assert!(!line.text.is_empty() && !line.text.starts_with('#'));
            prop_assert_eq!(line.text.trim_matches(parse::is_space), line.text.as_str());
            let _ = parse::words(&line.text);
        }
        let _ = parse::words(&text);
    }

    /// Without quotes or backslashes, words are the text split on white space.
    #[test]
    fn plain_words_split_on_space(text in "[a-z \t%{}=!$]{0,30}") {
        let expected: Vec<String> = text.split(parse::is_space).filter(|w| !w.is_empty()).map(String::from).collect();
        prop_assert_eq!(parse::words(&text).unwrap(), expected);
    }

    #[test]
    fn arbitrary_directives_never_panic(text in noise(80)) {
        if let Err(e) = directive::compile(&text) {
            check_error_line(&text, &e)?;
        }
    }

    #[test]
    fn any_string_directives_never_panic(text in any::<String>()) {
        if let Err(e) = directive::compile(&text) {
            check_error_line(&text, &e)?;
        }
    }
}

proptest! {
    #![proptest_config(config(500))]

    /// Grammar-shaped directives with random edits: compile errors name a directive's line, and
    /// what compiles runs on random requests and responses without panicking.
    #[test]
    fn grammar_directives_compile_or_name_a_line(
        text in directives_text(),
        req in request(),
        resp in response(),
        env in env_pairs(),
    ) {
        match directive::compile(&text) {
            Err(e) => {
                check_error_line(&text, &e)?;
                // The plugin's configure reports the same line.
                match configure(&text) {
                    Err(PluginError::InvalidOption((key, message))) => {
                        prop_assert_eq!(key, apache_rules::DIRECTIVES);
                        let prefix = format!("line {}: ", e.line);
                        prop_assert!(message.starts_with(&prefix), "{message}");
                    }
                    other => prop_assert!(false, "configure: {:?}", other.map(|_| ())),
                }
            }
            Ok(_) => {
                let Ok((mut rules, _needs)) = configure(&text) else {
                    return Err(TestCaseError::fail(format!("compile accepted but configure refused {text:?}")));
                };
                run_rules(&text, &mut rules, &req, &resp, &env)?;
            }
        }
    }

    #[test]
    fn expressions_parse_or_fail_and_evaluate(
        source in prop_oneof![3 => expression(), 1 => noise(40)],
        edits in edits(),
        req in request(),
        env in env_pairs(),
    ) {
        for source in [source.clone(), mutate(&source, &edits)] {
            if let Ok(mut expr) = expr::parse(&source) {
                let env = Env::new(&env);
                let headers = HeaderTable::new(&req.headers);
                let ctx = Ctx { request: view(&req), env: &env, request_headers: &headers, response_headers: None };
                let _ = expr.eval(&ctx);
                let ctx = Ctx { request: view(&req), env: &env, request_headers: &headers, response_headers: Some(&headers) };
                let _ = expr.eval(&ctx);
                let mut reads = apache_rules::needs::Reads::default();
                expr.reads(&mut reads);
            }
        }
    }

    /// Deeply nested or long expressions are refused, not a stack overflow.
    #[test]
    fn deep_expressions_are_refused_not_overflowed(depth in 1usize..4000, op in pick(&["!", "(", "req(", "!(", "-z ("])) {
        let source = format!("{}true", op.repeat(depth));
        let _ = expr::parse(&source);
        let chain = vec!["true"; depth].join(" && ");
        let _ = expr::parse(&chain);
    }

    #[test]
    fn formats_parse_or_fail_and_render_one_line(
        text in prop_oneof![3 => format_string(), 1 => noise(30)],
        edits in edits(),
        req in request(),
        env in env_pairs(),
    ) {
        for text in [text.clone(), mutate(&text, &edits)] {
            for phase in [format::Phase::Request, format::Phase::Response] {
                if let Ok(mut f) = format::Format::parse(&text, phase) {
                    let env = Env::new(&env);
                    let headers = HeaderTable::new(&req.headers);
                    let ctx = Ctx { request: view(&req), env: &env, request_headers: &headers, response_headers: Some(&headers) };
                    let out = f.render(&ctx);
                    prop_assert!(!bad_header_value(&out), "{text:?} rendered {out:?}");
                    let mut reads = apache_rules::needs::Reads::default();
                    f.reads(&mut reads);
                }
            }
        }
    }

    #[test]
    fn patterns_compile_or_fail_and_substitute(
        regex in prop_oneof!["[a-z^$.*+?()\\[\\]|\\\\{}0-9dwsb]{0,16}", noise(16)],
        icase in any::<bool>(),
        subject in noise(24),
        template in "[a-z$0-9\\\\]{0,12}",
    ) {
        if let Ok(re) = pattern::compile(&regex, icase) {
            if let Some(caps) = re.captures(subject.as_bytes()) {
                let _ = pattern::pregsub(&template, &caps);
            }
        } else if let Err(e) = pattern::compile(&regex, icase) {
            // One line, but for line breaks in the pattern it quotes.
            prop_assert!(!e.replace(&regex, "").contains('\n'), "multi-line error: {e}");
        }
    }
}

// ---- found by the properties above ------------------------------------------------------------

/// A raw control character inside a quoted value (a CR in the middle of a line, a NUL) used to be
/// accepted by `configure` and then made every request's header action fail in the host.
#[test]
fn a_control_character_in_a_value_is_a_configuration_error() {
    for (text, line) in [
        ("Header set X \"a\rb\"", 1),
        ("\nRequestHeader set Y 'c\rd'", 2),
        ("RequestHeader set Z e\u{0}f", 1),
        ("RequestHeader set Z \"e\u{7f}\"", 1),
        ("Header edit X ^a \"b\u{1}\"", 1),
    ] {
        match directive::compile(text) {
            Err(e) => {
                assert_eq!(e.line, line, "{text:?}: {e}");
                assert!(e.message.contains("control character"), "{text:?}: {e}");
            }
            Ok(_) => panic!("accepted {text:?}"),
        }
    }
    // A tab is fine, as in httpd.
    assert!(directive::compile("Header set X \"a\tb\"").is_ok());
}

/// The request fields of a view, as the engine reads them.
fn view(req: &RequestView) -> Request<'_> {
    Request {
        method: &req.method,
        path: &req.path,
        query: &req.query,
        client_addr: &req.client_addr,
        host: &req.host,
        start_us: 0,
        now_us: 0,
    }
}
