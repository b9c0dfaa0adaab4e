//! Request in → env/headers out, per directive, action and condition form.

mod common;

use apache_rules::testing::*;
use common::*;

/// A POST with a query, two Accept lines and an empty header, from 10.0.0.7.
fn post() -> RequestView {
    RequestView {
        method: "POST".into(),
        path: "/app/x".into(),
        query: "a=1".into(),
        client_addr: "10.0.0.7".into(),
        host: "www.example.com:8080".into(),
        headers: vec![
            ("user-agent".into(), "Mozilla/5.0 (X11)".into()),
            ("accept".into(), "text/html".into()),
            ("accept".into(), "application/json".into()),
            ("x-empty".into(), String::new()),
        ],
    }
}

fn set(name: &str, value: &str) -> (String, Option<String>) {
    (name.to_string(), Some(value.to_string()))
}

fn unset(name: &str) -> (String, Option<String>) {
    (name.to_string(), None)
}

#[test]
fn setenvif_sets_and_unsets_as_mod_setenvif() {
    let rows: Vec<(&str, Pairs, EnvActions)> = vec![
        (r#"SetEnvIf User-Agent "^Mozilla/(\d)" MOZ=$1"#, vec![], vec![set("MOZ", "5")]),
        ("SetEnvIf user-agent mozilla MOZ", vec![], vec![]),
        ("SetEnvIfNoCase User-Agent mozilla MOZ", vec![], vec![set("MOZ", "1")]),
        ("SetEnvIfNoCase User-Agent ^(MOZ)illa MOZ=$1", vec![], vec![set("MOZ", "Moz")]),
        // httpd: a pattern without metacharacters is a substring test, and values stay literal
        ("SetEnvIf User-Agent Mozilla UA=$0", vec![], vec![set("UA", "$0")]),
        ("SetEnvIf User-Agent ^Mozilla UA=$0", vec![], vec![set("UA", "Mozilla")]),
        (r#"SetEnvIf User-Agent "^(\S+)" "UA=\$1 is $1""#, vec![], vec![set("UA", "$1 is Mozilla/5.0")]),
        ("SetEnvIf Accept \"html, app\" BOTH", vec![], vec![set("BOTH", "1")]),
        (r"SetEnvIf Remote_Addr ^10\. INTERNAL", vec![], vec![set("INTERNAL", "1")]),
        (r"SetEnvIf Remote_Host ^10\. INTERNAL", vec![], vec![set("INTERNAL", "1")]),
        ("SetEnvIf Server_Addr .* NEVER", vec![], vec![]),
        ("SetEnvIf Request_Method ^POST$ POSTED", vec![], vec![set("POSTED", "1")]),
        (r"SetEnvIf Request_Protocol ^HTTP/1\.1$ H11", vec![], vec![set("H11", "1")]),
        ("SetEnvIf Request_URI ^/app/x$ APP", vec![], vec![set("APP", "1")]),
        ("SetEnvIf Request_URI a=1 QUERY", vec![], vec![]),
        ("SetEnvIf X-Empty ^$ EMPTY_HEADER", vec![], vec![set("EMPTY_HEADER", "1")]),
        ("SetEnvIf X-Absent ^$ ABSENT", vec![], vec![]),
        (
            "SetEnvIf Request_Method ^POST A B=2 !C D=x$0y",
            vec![("C", "1")],
            vec![set("A", "1"), set("B", "2"), unset("C"), set("D", "xPOSTy")],
        ),
        ("SetEnvIf User-Agent . !DROP", vec![("DROP", "1")], vec![unset("DROP")]),
        // each SetEnvIf sees what the previous ones did; an absent header falls back to the env
        (
            "SetEnvIf Request_Method POST STEP=one\nSetEnvIf STEP ^(o)ne SEEN=$1",
            vec![],
            vec![set("STEP", "one"), set("SEEN", "o")],
        ),
        (
            "SetEnvIf Request_Method ^POST$ M=1\nSetEnvIf M ^1$ !M\nSetEnvIf M ^1$ AGAIN",
            vec![],
            vec![set("M", "1"), unset("M")],
        ),
        ("SetEnvIf FROM_HOST ^abc$ HIT", vec![("FROM_HOST", "abc")], vec![set("HIT", "1")]),
        ("SetEnvIf User-Agent ^nothing HIT", vec![], vec![]),
    ];
    for (directives, env_in, expected) in rows {
        let (mut rules, _) = plugin(directives);
        let outcome = rules.on_request(&post(), &env(&env_in));
        assert_eq!(env_actions(&outcome), expected, "{directives}");
        assert!(outcome.headers.is_empty(), "{directives}");
    }
}

#[test]
fn request_header_actions_and_conditions() {
    let start = [("FULCRUM_REQUEST_START_US", "1700000000000000"), ("FULCRUM_NOW_US", "1700000000002500")];
    let rows: Vec<(&str, Pairs, Vec<Header>)> = vec![
        ("RequestHeader set X-A v", vec![], vec![h("set", "X-A", "v")]),
        ("RequestHeader append X-A v", vec![], vec![h("append", "X-A", "v")]),
        ("RequestHeader add X-A v", vec![], vec![h("add", "X-A", "v")]),
        ("RequestHeader unset Accept", vec![], vec![h("unset", "Accept", "")]),
        ("RequestHeader merge X-A v", vec![], vec![h("merge", "X-A", "v")]),
        ("RequestHeader setifempty X-A v", vec![], vec![h("set-if-empty", "X-A", "v")]),
        ("RequestHeader SET X-Foo: bar", vec![], vec![h("set", "X-Foo", "bar")]),
        ("RequestHeader set X-UA \"%{User-Agent}i\"", vec![], vec![h("set", "X-UA", "Mozilla/5.0 (X11)")]),
        ("RequestHeader set X-Acc %{accept}i", vec![], vec![h("set", "X-Acc", "text/html, application/json")]),
        ("RequestHeader set X-T \"%t %D\"", start.to_vec(), vec![h("set", "X-T", "t=1700000000000000 D=2500")]),
        ("RequestHeader set X-R \"%{REMOTE_ADDR}s %{HTTPS}s\"", vec![], vec![h("set", "X-R", "10.0.0.7 (null)")]),
        ("RequestHeader set X-E \"[%{NOPE}e|%{HAS}e]\"", vec![("HAS", "x")], vec![h("set", "X-E", "[(null)|x]")]),
        // edit: each line on its own; several lines come back as set + add
        (
            r#"RequestHeader edit Accept "^text/(\w+)" "T:$1""#,
            vec![],
            vec![h("set", "Accept", "T:html"), h("add", "Accept", "application/json")],
        ),
        ("RequestHeader edit X-None a b", vec![], vec![]),
        ("RequestHeader edit User-Agent zzz b", vec![], vec![]),
        ("RequestHeader edit* User-Agent [0-9] #", vec![], vec![h("set", "User-Agent", "Mozilla/#.# (X##)")]),
        ("RequestHeader edit User-Agent [0-9] #", vec![], vec![h("set", "User-Agent", "Mozilla/#.0 (X11)")]),
        (
            "RequestHeader edit User-Agent ^(\\w+) \"%{REMOTE_ADDR}s-$1\"",
            vec![],
            vec![h("set", "User-Agent", "10.0.0.7-Mozilla/5.0 (X11)")],
        ),
        (
            "RequestHeader set X-N abc\nRequestHeader edit X-N b B",
            vec![],
            vec![h("set", "X-N", "abc"), h("set", "X-N", "aBc")],
        ),
        ("RequestHeader unset Accept\nRequestHeader edit Accept t T", vec![], vec![h("unset", "Accept", "")]),
        // env= tests presence, whatever the value
        ("RequestHeader set X-A a env=HAS", vec![("HAS", "")], vec![h("set", "X-A", "a")]),
        ("RequestHeader set X-A a env=has", vec![("HAS", "1")], vec![h("set", "X-A", "a")]),
        ("RequestHeader set X-A a env=HAS", vec![], vec![]),
        ("RequestHeader set X-A a env=!HAS", vec![("HAS", "1")], vec![]),
        ("RequestHeader set X-A a env=!HAS", vec![], vec![h("set", "X-A", "a")]),
        ("RequestHeader unset Accept env=HAS", vec![("HAS", "1")], vec![h("unset", "Accept", "")]),
        // expr= sees the live headers, including earlier rules' changes
        ("RequestHeader set X-B hit \"expr=req('accept') =~ /json/\"", vec![], vec![h("set", "X-B", "hit")]),
        ("RequestHeader set X-B hit \"expr=req('accept') =~ /xml/\"", vec![], vec![]),
        (
            "RequestHeader set X-Step one\nRequestHeader set X-Seen yes \"expr=req('X-Step') == 'one'\"",
            vec![],
            vec![h("set", "X-Step", "one"), h("set", "X-Seen", "yes")],
        ),
        ("RequestHeader set X-B hit \"expr=-z resp('Server')\"", vec![], vec![h("set", "X-B", "hit")]),
        // Header rules belong to the response
        ("Header set X-A v\nHeader always set X-B v", vec![], vec![]),
    ];
    for (directives, env_in, expected) in rows {
        let (mut rules, _) = plugin(directives);
        let outcome = rules.on_request(&post(), &env(&env_in));
        assert_eq!(headers(&outcome), expected, "{directives}");
        assert!(outcome.env.is_empty(), "{directives}");
    }
}

#[test]
fn if_sections_choose_one_branch() {
    let chain = r#"
<If "%{REQUEST_METHOD} == 'GET'">
  RequestHeader set X-Branch get
</If>
<ElseIf "%{REQUEST_METHOD} == 'POST' && %{QUERY_STRING} == 'a=1'">
  RequestHeader set X-Branch post
</ElseIf>
<Else>
  RequestHeader set X-Branch other
</Else>
"#;
    let rows: Vec<(&str, RequestView, Pairs, Vec<Header>)> = vec![
        (chain, post(), vec![], vec![h("set", "X-Branch", "post")]),
        (chain, RequestView { method: "GET".into(), ..post() }, vec![], vec![h("set", "X-Branch", "get")]),
        (chain, RequestView { query: String::new(), ..post() }, vec![], vec![h("set", "X-Branch", "other")]),
        ("<If \"false\">\nRequestHeader set X a\n</If>", post(), vec![], vec![]),
        (
            "<If \"%{REMOTE_ADDR} -ipmatch '10.0.0.0/8'\">\nRequestHeader set X-Internal 1\n</If>",
            post(),
            vec![],
            vec![h("set", "X-Internal", "1")],
        ),
        (
            "<If \"%{REMOTE_ADDR} -ipmatch '192.168.0.0/16'\">\nRequestHeader set X-Internal 1\n</If>",
            post(),
            vec![],
            vec![],
        ),
        (
            "<If \"%{HTTP_HOST} =~ m#:8080$#\">\nRequestHeader set X-Port 8080\n</If>",
            post(),
            vec![],
            vec![h("set", "X-Port", "8080")],
        ),
        (
            "<If \"%{REQUEST_URI} == '/app/x'\">\nRequestHeader set X-Uri 1\n</If>",
            post(),
            vec![],
            vec![h("set", "X-Uri", "1")],
        ),
        (
            "<If \"-n env('HOSTVAR')\">\nRequestHeader set X-H 1\n</If>",
            post(),
            vec![("HOSTVAR", "x")],
            vec![h("set", "X-H", "1")],
        ),
        // nested sections
        (
            "<If \"true\">\n<If \"false\">\nRequestHeader set X a\n</If>\n<Else>\nRequestHeader set X b\n</Else>\n</If>",
            post(),
            vec![],
            vec![h("set", "X", "b")],
        ),
        // the conditions see SetEnvIf's results...
        (
            "SetEnvIf User-Agent ^Mozilla MOZ\n<If \"-n env('MOZ')\">\nRequestHeader set X-Moz 1\n</If>",
            post(),
            vec![],
            vec![h("set", "X-Moz", "1")],
        ),
        // ...but not the header rules' changes: httpd evaluates <If> before any header rule runs
        (
            "RequestHeader set X-Step one\n<If \"req('X-Step') == 'one'\">\nRequestHeader set X-Seen yes\n</If>",
            post(),
            vec![],
            vec![h("set", "X-Step", "one")],
        ),
        // file order across top level and sections
        (
            "RequestHeader set X 1\n<If \"true\">\nRequestHeader set X 2\n</If>\nRequestHeader set X 3",
            post(),
            vec![],
            vec![h("set", "X", "1"), h("set", "X", "2"), h("set", "X", "3")],
        ),
    ];
    for (directives, request, env_in, expected) in rows {
        let (mut rules, _) = plugin(directives);
        let outcome = rules.on_request(&request, &env(&env_in));
        assert_eq!(headers(&outcome), expected, "{directives}\n{request:?}");
    }
}

#[test]
fn header_rules_on_responses() {
    use ResponseOrigin::{Generated, Proxied};
    let backend = [
        ("content-type", "text/html"),
        ("location", "http://backend:18001/next"),
        ("set-cookie", "a=1"),
        ("set-cookie", "b=2"),
        ("server", "backend"),
    ];
    let rows: Vec<(&str, ResponseOrigin, Pairs, Vec<Header>)> = vec![
        ("Header set X-A v", Proxied, vec![], vec![h("set", "X-A", "v")]),
        ("Header set X-A v", Generated, vec![], vec![]),
        ("Header onsuccess set X-A v", Generated, vec![], vec![]),
        ("Header always set X-A v", Generated, vec![], vec![h("set", "X-A", "v")]),
        ("Header always set X-A v", Proxied, vec![], vec![h("set", "X-A", "v")]),
        ("Header unset Server", Proxied, vec![], vec![h("unset", "Server", "")]),
        ("Header merge Cache-Control no-cache", Proxied, vec![], vec![h("merge", "Cache-Control", "no-cache")]),
        (
            r#"Header edit Location ^http://backend:18001/ https://www.example.com/"#,
            Proxied,
            vec![],
            vec![h("set", "Location", "https://www.example.com/next")],
        ),
        (
            "Header edit* Set-Cookie ^(\\w)= $1_x=",
            Proxied,
            vec![],
            vec![h("set", "Set-Cookie", "a_x=1"), h("add", "Set-Cookie", "b_x=2")],
        ),
        ("Header set X-Type %{Content-Type}o", Proxied, vec![], vec![h("set", "X-Type", "text/html")]),
        ("Header set X-Cookies %{Set-Cookie}o", Proxied, vec![], vec![h("set", "X-Cookies", "a=1, b=2")]),
        ("Header set X-UA %{User-Agent}i", Proxied, vec![], vec![h("set", "X-UA", "Mozilla/5.0 (X11)")]),
        (
            "Header set X-A 1\nHeader set X-B \"%{X-A}o\"",
            Proxied,
            vec![],
            vec![h("set", "X-A", "1"), h("set", "X-B", "1")],
        ),
        (
            "Header set X-Html 1 \"expr=resp('Content-Type') =~ m#^text/#\"",
            Proxied,
            vec![],
            vec![h("set", "X-Html", "1")],
        ),
        ("Header set X-First 1 \"expr=resp('Set-Cookie') == 'a=1'\"", Proxied, vec![], vec![h("set", "X-First", "1")]),
        ("Header set X-Json 1 \"expr=resp('Content-Type') =~ /json/\"", Proxied, vec![], vec![]),
        (
            "Header always set X-R 1 env=BALANCER_WORKER_ROUTE",
            Generated,
            vec![("BALANCER_WORKER_ROUTE", "web1")],
            vec![h("set", "X-R", "1")],
        ),
        // sections holding Header rules are decided when the response is known
        (
            "<If \"-n env('BALANCER_ROUTE_CHANGED')\">\nHeader set X-Changed yes\n</If>",
            Proxied,
            vec![("BALANCER_ROUTE_CHANGED", "1")],
            vec![h("set", "X-Changed", "yes")],
        ),
        (
            "<If \"resp('Server') == 'cache'\">\nHeader set X-From cache\n</If>\n<Else>\nHeader set X-From origin\n</Else>",
            Proxied,
            vec![],
            vec![h("set", "X-From", "origin")],
        ),
        (
            "<If \"true\">\nRequestHeader set X-Req 1\nHeader set X-Resp 1\n</If>",
            Proxied,
            vec![],
            vec![h("set", "X-Resp", "1")],
        ),
        ("RequestHeader set X-Req 1", Proxied, vec![], vec![]),
    ];
    for (directives, origin, env_in, expected) in rows {
        let (mut rules, _) = plugin(directives);
        let outcome = rules.on_response(&post(), &response(200, origin, &backend), &env(&env_in));
        assert_eq!(headers(&outcome), expected, "{directives} ({origin:?})");
        assert!(outcome.env.is_empty(), "{directives}");
    }
}

#[test]
fn configure_errors_name_the_option_and_the_line() {
    let (key, message) = configure_error(&[("directives", "RequestHeader set X y\n\n  Header sett X y")]);
    assert_eq!(key, "directives");
    assert!(message.starts_with("line 3: Header: unknown action `sett`"), "{message}");

    let (key, message) = configure_error(&[("directives", "SetEnvIf X-Forwarded-For \"(\\d)\\1\" IP=$1")]);
    assert_eq!(key, "directives");
    assert!(
        message.starts_with("line 1: SetEnvIf: bad regex `(\\d)\\1`: backreferences are not supported"),
        "{message}"
    );

    let (key, message) = configure_error(&[("directives", "Header set X y"), ("rules", "x")]);
    assert_eq!(key, "rules");
    assert!(message.contains("unknown option"), "{message}");
}

#[test]
fn no_directives_means_no_rules_and_no_needs() {
    for directives in [None, Some(""), Some("# only a comment\n\n")] {
        let options = directives.map(|d| vec![("directives".to_string(), d.to_string())]).unwrap_or_default();
        let config = PluginConfig { name: "apache-rules".into(), options, toml: String::new() };
        let (mut rules, needs) = apache_rules::ApacheRules::configure(&config).unwrap_or_else(|e| panic!("{e:?}"));
        assert!(needs.fields.is_empty() && needs.request_headers.is_empty() && needs.response_headers.is_empty());
        let outcome = rules.on_request(&post(), &[]);
        assert!(outcome.env.is_empty() && outcome.headers.is_empty());
    }
}

/// Request data the rules do not expect must not trap the component.
#[test]
fn hostile_request_data_does_not_panic() {
    let directives = r#"
SetEnvIf X-A "(([\d]{1,3}\.?){4})" IP=$1 RAW=$9
SetEnvIfNoCase X-A ^(.) FIRST=$1
RequestHeader edit* X-A "x*" "[$0]"
RequestHeader edit X-A "(.)$" "$1$2"
RequestHeader set X-T "%t %D %{X-A}i %{IP}e"
<If "%{REMOTE_ADDR} -ipmatch '10.0.0.0/8' || req('X-A') =~ /\xff/ || env('FULCRUM_NOW_US') == '-1'">
  RequestHeader set X-In 1
</If>
Header edit* X-A "^" "-"
Header set X-O "%{X-A}o %D"
"#;
    let (mut rules, _) = plugin(directives);
    let values = ["", "é", "\u{0}", "\r\n", "1.2.3.4é5", "ÿÿÿ", &"9.".repeat(2000), "x"];
    let clients = ["", "not-an-ip", "::ffff:10.1.2.3", "[::1]", "10.0.0.1"];
    let times = [("FULCRUM_REQUEST_START_US", "99999999999999999999"), ("FULCRUM_NOW_US", "-5")];
    for value in values {
        for client in clients {
            let request = request(client, &[("x-a", value), ("x-a", value)]);
            let outcome = rules.on_request(&request, &env(&times));
            assert!(!outcome.headers.is_empty());
            let response = response(200, ResponseOrigin::Proxied, &[("x-a", value)]);
            rules.on_response(&request, &response, &env(&times));
        }
    }
}
