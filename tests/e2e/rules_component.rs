//! The built-in `apache-rules` plugin driven through the real Wasm component (in-process, via the
//! plugin registry): directives and request in, env and header actions out.

use fulcrum::balancer::{ClientAddr, RequestInfo};
use fulcrum::plugin::{PluginLimits, PluginRegistry};
use fulcrum::rules::{Clock, Env, HeaderAction, HeaderOp, Origin, RequestRules, ResponseInfo, RulesFactory};
use hyper::http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};

fn rules(directives: &str) -> Box<dyn RequestRules> {
    let registry = PluginRegistry::load(None, PluginLimits::default()).unwrap();
    let mut table = toml::Table::new();
    table.insert("directives".into(), toml::Value::String(directives.into()));
    match registry.rules("apache-rules", &table) {
        Ok(r) => r,
        Err(e) => panic!("{directives}\n-> {}", e.message),
    }
}

/// The directives of `examples/apache-guide.toml`'s `[[vhost.rules]]`, as the user wrote them.
fn guide_directives() -> String {
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/apache-guide.toml")).unwrap();
    let start = example.find("directives = '''").unwrap() + "directives = '''".len();
    let end = start + example[start..].find("'''").unwrap();
    example[start..end].to_string()
}

fn headers(list: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in list {
        h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
    }
    h
}

fn env(list: &[(&str, &str)]) -> Env {
    let mut e = Env::default();
    for (k, v) in list {
        e.set(k.to_string(), v.to_string());
    }
    e
}

fn action(op: HeaderOp, name: &str, value: &str) -> HeaderAction {
    HeaderAction {
        op,
        name: HeaderName::from_bytes(name.as_bytes()).unwrap(),
        value: HeaderValue::from_str(value).unwrap(),
    }
}

fn set(name: &str, value: &str) -> HeaderAction {
    action(HeaderOp::Set, name, value)
}

fn add(name: &str, value: &str) -> HeaderAction {
    action(HeaderOp::Add, name, value)
}

const CLOCK: Clock = Clock { request_start_us: 1_700_000_000_000_000, now_us: 1_700_000_000_000_100 };

struct Request {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    client: ClientAddr,
}

impl Request {
    fn new(uri: &'static str, list: &[(&str, &str)]) -> Request {
        Request {
            method: Method::GET,
            uri: Uri::from_static(uri),
            headers: headers(list),
            client: [10, 0, 0, 7].into(),
        }
    }

    fn info(&self) -> RequestInfo<'_> {
        RequestInfo {
            id: 1,
            method: &self.method,
            uri: &self.uri,
            headers: &self.headers,
            client: &self.client,
            host: "www.example.com",
        }
    }
}

/// Request phase: directives + request in → env changes and request header actions out.
#[test]
fn request_phase_table() {
    type Case = (
        &'static str,
        &'static str,
        &'static [(&'static str, &'static str)],
        Vec<(&'static str, Option<&'static str>)>,
        Vec<HeaderAction>,
    );
    let cases: Vec<Case> = vec![
        (
            r#"SetEnvIf X-Forwarded-For "(([\d]{1,3}\.?){4})" FORWARD_IP=$1"#,
            "/",
            &[("x-forwarded-for", "1.2.3.4, 5.6.7.8")],
            vec![("FORWARD_IP", Some("1.2.3.4"))],
            vec![],
        ),
        (
            r#"SetEnvIf X-Forwarded-For "(([\d]{1,3}\.?){4})" FORWARD_IP=$1"#,
            "/",
            &[("x-forwarded-for", "garbage")],
            vec![],
            vec![],
        ),
        (
            r#"SetEnvIfNoCase User-Agent "^curl" IS_CURL NOT_BROWSER=yes"#,
            "/",
            &[("user-agent", "CURL/8")],
            vec![("IS_CURL", Some("1")), ("NOT_BROWSER", Some("yes"))],
            vec![],
        ),
        (r#"SetEnvIf User-Agent "^curl" IS_CURL"#, "/", &[("user-agent", "CURL/8")], vec![], vec![]),
        (r#"SetEnvIf Request_URI "^/api/(v\d)" API=$1"#, "/api/v2/users?x=1", &[], vec![("API", Some("v2"))], vec![]),
        (r#"SetEnvIf Remote_Addr "^10\." INTERNAL"#, "/", &[], vec![("INTERNAL", Some("1"))], vec![]),
        (r#"SetEnvIf Request_Method "GET" !CACHEABLE_NOT"#, "/", &[], vec![("CACHEABLE_NOT", None)], vec![]),
        ("RequestHeader set X-A \"one\"", "/", &[], vec![], vec![set("X-A", "one")]),
        ("RequestHeader add X-A two", "/", &[], vec![], vec![add("X-A", "two")]),
        ("RequestHeader unset Cookie", "/", &[("cookie", "a=1")], vec![], vec![action(HeaderOp::Unset, "Cookie", "")]),
        ("RequestHeader set X-Client %{REMOTE_ADDR}s", "/", &[], vec![], vec![set("X-Client", "10.0.0.7")]),
        (
            "RequestHeader set X-UA \"ua=%{User-Agent}i\"",
            "/",
            &[("user-agent", "curl/8")],
            vec![],
            vec![set("X-UA", "ua=curl/8")],
        ),
        ("RequestHeader set X-Pct \"100%%\"", "/", &[], vec![], vec![set("X-Pct", "100%")]),
        ("RequestHeader edit X-Id ^id- user-", "/", &[("x-id", "id-42")], vec![], vec![set("X-Id", "user-42")]),
        ("RequestHeader set X-Env %{GIVEN}e env=GIVEN", "/", &[], vec![], vec![]),
        ("RequestHeader set X-Not yes env=!GIVEN", "/", &[], vec![], vec![set("X-Not", "yes")]),
        (
            "RequestHeader set X-Expr yes \"expr=req('x-a') == 'b'\"",
            "/",
            &[("x-a", "b")],
            vec![],
            vec![set("X-Expr", "yes")],
        ),
        (
            "<If \"-z env('FORWARD_IP')\">\n  RequestHeader set X-F none\n</If>\n<Else>\n  RequestHeader set X-F \"%{FORWARD_IP}e\"\n</Else>",
            "/",
            &[],
            vec![],
            vec![set("X-F", "none")],
        ),
        (
            "SetEnvIf X-Real (.+) FORWARD_IP=$1\n<If \"-z env('FORWARD_IP')\">\n  RequestHeader set X-F none\n</If>\n<Else>\n  RequestHeader set X-F \"%{FORWARD_IP}e\"\n</Else>",
            "/",
            &[("x-real", "9.9.9.9")],
            vec![("FORWARD_IP", Some("9.9.9.9"))],
            vec![set("X-F", "9.9.9.9")],
        ),
        (
            "<If \"%{REMOTE_ADDR} -ipmatch '10.0.0.0/8' && req('x-a') =~ /^b/\">\n RequestHeader set X-Net internal\n</If>\n<ElseIf \"true\">\n RequestHeader set X-Net other\n</ElseIf>",
            "/",
            &[("x-a", "bee")],
            vec![],
            vec![set("X-Net", "internal")],
        ),
        (
            "<If \"-n req('x-a') || !(req('x-b') != 'c')\">\n RequestHeader set X-Or yes\n</If>",
            "/",
            &[("x-b", "c")],
            vec![],
            vec![set("X-Or", "yes")],
        ),
    ];
    for (directives, uri, request_headers, env_out, headers_out) in cases {
        let r = rules(directives);
        let request = Request::new(uri, request_headers);
        let outcome = r.on_request(&request.info(), &Env::default(), CLOCK).unwrap();
        let env_got: Vec<(&str, Option<&str>)> = outcome.env.iter().map(|(k, v)| (&**k, v.as_deref())).collect();
        assert_eq!(env_got, env_out, "env for:\n{directives}");
        assert_eq!(outcome.headers.as_slice(), headers_out, "headers for:\n{directives}");
    }
}

/// Response phase: `Header` conditions on env, `always` vs onsuccess, response headers.
#[test]
fn response_phase_table() {
    let guide = r#"Header add Set-Cookie "BALANCEID=balancer.%{BALANCER_WORKER_ROUTE}e; path=/;" env=BALANCER_ROUTE_CHANGED
Header add X-Balance "BALANCER_WORKER_ROUTE=%{BALANCER_WORKER_ROUTE}e" env=BALANCER_WORKER_ROUTE
Header always set X-Always yes
Header set X-Type "%{Content-Type}o"
Header edit* X-List , ;"#;
    let r = rules(guide);
    let request = Request::new("/", &[]);
    let changed = env(&[("BALANCER_ROUTE_CHANGED", "1"), ("BALANCER_WORKER_ROUTE", "web2")]);
    let response_headers = headers(&[("content-type", "text/plain"), ("x-list", "a,b,c")]);

    let proxied = ResponseInfo { status: 404, origin: Origin::Proxied, headers: &response_headers };
    let outcome = r.on_response(&request.info(), &proxied, &changed, CLOCK).unwrap();
    assert_eq!(
        outcome.headers.as_slice(),
        [
            add("Set-Cookie", "BALANCEID=balancer.web2; path=/;"),
            add("X-Balance", "BALANCER_WORKER_ROUTE=web2"),
            set("X-Always", "yes"),
            set("X-Type", "text/plain"),
            set("X-List", "a;b;c"),
        ]
    );

    let generated = ResponseInfo { status: 503, origin: Origin::Generated, headers: &response_headers };
    let outcome = r.on_response(&request.info(), &generated, &changed, CLOCK).unwrap();
    assert_eq!(
        outcome.headers.as_slice(),
        [set("X-Always", "yes")],
        "only `always` rules apply to Fulcrum's own pages"
    );

    let sticky = env(&[("BALANCER_WORKER_ROUTE", "web2")]);
    let outcome = r.on_response(&request.info(), &proxied, &sticky, CLOCK).unwrap();
    assert_eq!(outcome.headers[0], add("X-Balance", "BALANCER_WORKER_ROUTE=web2"), "no cookie without ROUTE_CHANGED");
}

/// Bad rules are refused at configure time with the line inside the directives.
#[test]
fn bad_rules_name_their_line() {
    let registry = PluginRegistry::load(None, PluginLimits::default()).unwrap();
    let cases = [
        ("RequestHeader set X-A 1\nSetEnvIf X-B \"([\" B=1", 2, "regex"),
        ("Header sett X-A 1", 1, "sett"),
        ("\n<If \"true\">\nHeader set X-A 1\n", 2, "If"),
        ("<Else>\nHeader set X-A 1\n</Else>", 1, "Else"),
        ("Header set X-A \"%{X}q\"", 1, "%{X}q"),
        ("Frobnicate on", 1, "Frobnicate"),
        ("<If \"req('a') ==\">\nHeader set X 1\n</If>", 1, "If"),
    ];
    for (directives, line, mentions) in cases {
        let mut table = toml::Table::new();
        table.insert("directives".into(), toml::Value::String(directives.into()));
        let err = match registry.rules("apache-rules", &table) {
            Ok(_) => panic!("accepted:\n{directives}"),
            Err(e) => e,
        };
        assert_eq!(err.option.as_deref(), Some("directives"), "{directives}: {}", err.message);
        assert_eq!(err.line, Some(line), "{directives}: {}", err.message);
        assert!(err.message.contains(mentions), "{directives}: `{mentions}` not in: {}", err.message);
    }
}

/// No request can make the guide's rules fault: 3,000 generated requests with odd header values
/// (long, empty, repeated, non-ASCII bytes, regex-hostile) go through the real component.
#[test]
fn odd_requests_never_fault_the_guide_rules() {
    let r = rules(&guide_directives());
    let pieces: [&[u8]; 12] = [
        b"1.2.3.4",
        b"",
        b", ",
        b"999.999.999.999.999",
        b"::ffff:10.0.0.1",
        b"\xff\xfe",
        b"(((((",
        b"$1$2\\",
        b"%{X}e",
        b"unknown",
        b"0.0.0.0.0.0.0.0.0.0",
        b"                ",
    ];
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..3000 {
        let mut request = Request::new("/", &[]);
        for _ in 0..(next() % 4) {
            let mut value = Vec::new();
            for _ in 0..(next() % 6) {
                value.extend_from_slice(pieces[(next() % pieces.len() as u64) as usize]);
            }
            if next() % 50 == 0 {
                value.extend(std::iter::repeat_n(b'9', 4000));
            }
            if let Ok(v) = HeaderValue::from_bytes(&value) {
                request.headers.append("x-forwarded-for", v);
            }
        }
        let outcome = r.on_request(&request.info(), &Env::default(), CLOCK).expect("on-request must not fault");
        let mut env = Env::default();
        env.apply(outcome.env);
        env.set("BALANCER_WORKER_ROUTE", "web1");
        let response_headers = HeaderMap::new();
        let view = ResponseInfo { status: 200, origin: Origin::Proxied, headers: &response_headers };
        r.on_response(&request.info(), &view, &env, CLOCK).expect("on-response must not fault");
    }
}

/// A rules call's memory is given back: 100,000 requests through the guide's rules (both calls,
/// the four response headers of a route change) on one instance capped at 8 MiB, never recycled.
/// A plugin allocator that kept even a few bytes per call would reach the cap and fault.
#[test]
fn the_guide_rules_run_in_constant_memory() {
    let limits = PluginLimits { memory_bytes: 8 << 20, recycle_after: None, ..PluginLimits::default() };
    let registry = PluginRegistry::load(None, limits).unwrap();
    let mut table = toml::Table::new();
    table.insert("directives".into(), toml::Value::String(guide_directives()));
    let r = registry.rules("apache-rules", &table).unwrap_or_else(|e| panic!("{}", e.message));

    let request = Request::new("/index.html", &[("x-forwarded-for", "203.0.113.7")]);
    let response_headers = headers(&[("content-type", "text/html")]);
    let view = ResponseInfo { status: 200, origin: Origin::Proxied, headers: &response_headers };
    for i in 0..100_000 {
        let outcome =
            r.on_request(&request.info(), &Env::default(), CLOCK).unwrap_or_else(|e| panic!("call {i}: {e:?}"));
        let mut env = Env::default();
        env.apply(outcome.env);
        env.set("BALANCER_WORKER_ROUTE", if i % 2 == 0 { "web1" } else { "web2" });
        env.set("BALANCER_ROUTE_CHANGED", "1");
        env.set("BALANCER_SESSION_ROUTE", "web1");
        let outcome = r.on_response(&request.info(), &view, &env, CLOCK).unwrap_or_else(|e| panic!("call {i}: {e:?}"));
        assert_eq!(outcome.headers.len(), 4, "call {i}: {outcome:?}");
    }
}
