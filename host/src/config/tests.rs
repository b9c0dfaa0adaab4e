use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("test.toml"))
}

const GOOD: &str = r#"
listen = ["127.0.0.1:8080"]

[[vhost]]
server_name = "www.example.com"
proxy_pass = [{ path = "/", to = "balancer://default/" }]

[balancer.default]
lbmethod = "byrequests"

[[balancer.default.member]]
url = "http://127.0.0.1:18001"
route = "web1"

[[balancer.default.member]]
url = "http://127.0.0.1:18002/app/"
route = "web2"
loadfactor = 2
"#;

#[test]
fn a_good_file_loads_with_apache_defaults() {
    let c = parse(GOOD).unwrap();
    assert_eq!(c.listen, ["127.0.0.1:8080".parse::<SocketAddr>().unwrap()]);
    let b = &c.balancers[0];
    assert_eq!((b.name.as_str(), b.lbmethod.as_str()), ("default", "byrequests"));
    assert_eq!(b.members[0].lbfactor, 100);
    assert_eq!(b.members[1].lbfactor, 200);
    assert_eq!(b.members[1].path, "/app");
    assert_eq!(b.members[0].retry, DEFAULT_RETRY);
    assert!(matches!(c.vhosts[0].routes[0].target, RouteTarget::Balancer { index: 0, ref path } if path == "/"));
}

/// Each bad line in, the message (with its line) out: every problem is reported, not just the first.
#[test]
fn every_problem_is_reported_with_its_line() {
    let text = GOOD
        .replace("route = \"web1\"", "route = \"web1\"\nlbfactor = 3")
        .replace("http://127.0.0.1:18002/app/", "htp:/nowhere")
        + "\n[balancer.empty]\nlbmethod = \"byrequests\"\n";
    let err = parse(&text).unwrap_err().to_string();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert!(lines[0].starts_with("test.toml:14:1: `balancer.default.member[0].lbfactor`: unknown key"), "{err}");
    assert!(
        lines[1].starts_with("test.toml:17:7: `balancer.default.member[1].url`: bad member URL `htp:/nowhere`"),
        "{err}"
    );
    assert!(lines[2].starts_with("test.toml:21:1: `balancer.empty`: balancer `empty` has no members"), "{err}");
}

#[test]
fn table_of_bad_values() {
    let cases: &[(&str, &str, &str)] = &[
        ("loadfactor = 2", "loadfactor = 0", "loadfactor must be 1 to 100"),
        ("route = \"web2\"", "route = \"web1\"", "route `web1` is already used"),
        ("to = \"balancer://default/\"", "to = \"balancer://nope/\"", "no balancer named `nope`"),
        ("to = \"balancer://default/\"", "to = \"http://x/\"", "neither `balancer://NAME/` nor `!`"),
        ("127.0.0.1:8080", "localhost", "not an IP address with a port"),
        ("url = \"http://127.0.0.1:18001\"", "url = \"ftp://127.0.0.1:18001\"", "scheme `ftp` is not supported"),
        ("lbmethod = \"byrequests\"", "lbmethod = 3", "invalid type"),
        (
            "lbmethod = \"byrequests\"",
            "lbmethod = \"byrequests\"\nupgrade = \"web socket\"",
            "test.toml:10:11: `balancer.default.upgrade`: `web socket` is not a protocol name",
        ),
        (
            "lbmethod = \"byrequests\"",
            "lbmethod = \"byrequests\"\nupgrade = \" \"",
            "`balancer.default.upgrade`: empty",
        ),
        (
            "lbmethod = \"byrequests\"",
            "lbmethod = \"byrequests\"\ntunnel_lifetime = 0",
            "`balancer.default.tunnel_lifetime`: 0 would close every tunnel at once",
        ),
        (
            "listen = [\"127.0.0.1:8080\"]",
            "listen = [\"127.0.0.1:8080\"]\nplugin_cache_max_mib = 0",
            "test.toml:3:24: `plugin_cache_max_mib`: must be 1 to 1048576 (MiB)",
        ),
    ];
    for (from, to, expected) in cases {
        let text = GOOD.replacen(from, to, 1);
        let err = parse(&text).expect_err(to).to_string();
        assert!(err.contains(expected), "{to}: expected `{expected}` in: {err}");
        assert!(err.starts_with("test.toml:"), "{to}: no location in: {err}");
    }
}

/// Apache's `upgrade=`: protocol names, `*` for any; the offer's first allowed token wins.
#[test]
fn upgrade_lists_the_protocols_a_client_may_switch_to() {
    let upgrade =
        |line: &str| parse(&GOOD.replacen("lbmethod = \"byrequests\"", line, 1)).unwrap().balancers[0].upgrade.clone();
    assert_eq!(upgrade("lbmethod = \"byrequests\""), Upgrade::Off);
    assert_eq!(upgrade("upgrade = \"*\""), Upgrade::Any);
    let ws = upgrade("upgrade = \"WebSocket, foo\"");
    assert_eq!(ws, Upgrade::Protocols(vec!["WebSocket".into(), "foo".into()]));
    for (offered, allowed) in [
        ("websocket", Some("websocket")),
        ("h2c, websocket", Some("websocket")),
        ("foo/2", Some("foo/2")),
        ("h2c", None),
        ("", None),
    ] {
        assert_eq!(ws.allowed(offered), allowed, "{offered}");
    }
    assert_eq!(Upgrade::Any.allowed("h2c, websocket"), Some("h2c"));
    assert_eq!(Upgrade::Off.allowed("websocket"), None);
}

#[test]
fn broken_toml_names_its_line() {
    let err = parse("listen = [\"127.0.0.1:8080\"\n[[vhost]]\n").unwrap_err().to_string();
    assert!(err.starts_with("test.toml:"), "{err}");
}

/// `file:line:column` of what follows the first `before` in `text`, as problems print it.
fn at(text: &str, before: &str) -> String {
    let offset = text.find(before).unwrap_or_else(|| panic!("`{before}` is not in:\n{text}")) + before.len();
    let l = Location::of(text, offset);
    format!("test.toml:{}:{}", l.line, l.column)
}

/// Config in (a line of GOOD replaced), problem out: each at the file, line and column of the value
/// and naming its dotted key. These all parsed before, and each could only fail at run time (or,
/// for a zero timeout, fail every request with a 502).
#[test]
fn values_that_cannot_work_are_refused_at_their_key() {
    // (replace, with, key, the text right before the value, message)
    let cases: &[(&str, &str, &str, &str, &str)] = &[
        (
            "listen = [\"127.0.0.1:8080\"]",
            "listen = [\"127.0.0.1:8080\"]\nproxy_timeout = 0",
            "proxy_timeout",
            "proxy_timeout = ",
            "must be at least 1 second",
        ),
        (
            "lbmethod = \"byrequests\"",
            "timeout = 0",
            "balancer.default.timeout",
            "\ntimeout = ",
            "must be at least 1 second",
        ),
        (
            "route = \"web1\"",
            "route = \"web1\"\ntimeout = 0",
            "balancer.default.member[0].timeout",
            "\ntimeout = ",
            "must be at least 1 second",
        ),
        (
            "route = \"web1\"",
            "route = \"web1\"\nconnectiontimeout = 0",
            "balancer.default.member[0].connectiontimeout",
            "connectiontimeout = ",
            "must be at least 1 second (0 would time out every request: a 502 each)",
        ),
        (
            "proxy_pass = [",
            "proxy_pass_match = [{ regex = \"^/x\", to = \"http://127.0.0.1:9\", connectiontimeout = 0 }]\nproxy_pass = [",
            "vhost[0].proxy_pass_match[0].connectiontimeout",
            "connectiontimeout = ",
            "must be at least 1 second",
        ),
        (
            "\"127.0.0.1:8080\"",
            "\"127.0.0.1:8080\", \"127.0.0.1:8080\"",
            "listen[1]",
            "\"127.0.0.1:8080\", ",
            "127.0.0.1:8080 is already `listen[0]` (line 2)",
        ),
        // The same socket written differently.
        (
            "\"127.0.0.1:8080\"",
            "\"[::1]:8080\", \"[0:0:0:0:0:0:0:1]:8080\"",
            "listen[1]",
            "\"[::1]:8080\", ",
            "[::1]:8080 is already `listen[0]` (line 2)",
        ),
        (
            "\"127.0.0.1:8080\"",
            "\"127.0.0.1:8080\", \"0.0.0.0:8080\"",
            "listen[1]",
            "\"127.0.0.1:8080\", ",
            "0.0.0.0:8080 overlaps 127.0.0.1:8080 (`listen[0]`, line 2)",
        ),
        (
            "listen = [\"127.0.0.1:8080\"]",
            "listen = [\"127.0.0.1:8080\"]\nadmin_listen = \"127.0.0.1:08080\"",
            "admin_listen",
            "admin_listen = ",
            "127.0.0.1:8080 is already `listen[0]` (line 2)",
        ),
        (
            "\"127.0.0.1:8080\"",
            "\"127.0.0.1:8080\", \"127.0.0.1\"",
            "listen[1]",
            "\"127.0.0.1:8080\", ",
            "`127.0.0.1` is not an IP address with a port",
        ),
        // The wrong type: named by its key, however deep.
        (
            "listen = [\"127.0.0.1:8080\"]",
            "listen = [\"127.0.0.1:8080\"]\nproxy_timeout = \"5\"",
            "proxy_timeout",
            "proxy_timeout = ",
            "invalid type: string \"5\", expected u64",
        ),
        (
            "loadfactor = 2",
            "loadfactor = \"x\"",
            "balancer.default.member[1].loadfactor",
            "loadfactor = ",
            "invalid type",
        ),
        (
            "listen = [\"127.0.0.1:8080\"]",
            "listen = 80",
            "listen",
            "listen = ",
            "invalid type: integer `80`, expected a sequence",
        ),
        ("lbmethod = \"byrequests\"", "lbmethod = 3", "balancer.default.lbmethod", "lbmethod = ", "invalid type"),
        (
            "url = \"http://127.0.0.1:18001\"",
            "url = 18001",
            "balancer.default.member[0].url",
            "url = ",
            "invalid type: integer `18001`, expected a string",
        ),
        (
            "lbmethod = \"byrequests\"",
            "lbmethod = \"byrequests\"\nfailonstatus = [500, \"x\"]",
            "balancer.default.failonstatus[1]",
            "[500, ",
            "invalid type",
        ),
        (
            "listen = [\"127.0.0.1:8080\"]",
            "listen = [\"127.0.0.1:8080\"]\nplugins_dir = \"/nonexistent/plugins.d\"",
            "plugins_dir",
            "plugins_dir = ",
            "/nonexistent/plugins.d: No such file or directory",
        ),
        (
            "listen = [\"127.0.0.1:8080\"]",
            "listen = [\"127.0.0.1:8080\"]\nplugins_dir = \"/etc/hostname\"",
            "plugins_dir",
            "plugins_dir = ",
            "/etc/hostname is not a directory",
        ),
    ];
    for (from, to, key, before, message) in cases {
        assert!(GOOD.contains(from), "{from}");
        let text = GOOD.replacen(from, to, 1);
        let err = parse(&text).expect_err(to).to_string();
        let expected = format!("{}: `{key}`: {message}", at(&text, before));
        assert!(err.lines().count() == 1, "{to}: expected one problem, got:\n{err}");
        assert!(err.starts_with(&expected), "{to}:\nexpected `{expected}`\n     got `{err}`");
    }
}

/// Port 0 (any free port) is not a clash, nor is the same port on two addresses.
#[test]
fn distinct_sockets_are_accepted() {
    let text = GOOD.replace(
        "listen = [\"127.0.0.1:8080\"]",
        "listen = [\"127.0.0.1:0\", \"127.0.0.1:0\", \"127.0.0.2:8080\", \"127.0.0.1:8080\", \"[::1]:8080\"]",
    );
    let c = parse(&text).unwrap();
    assert_eq!(c.listen.len(), 5);
}

/// A value of the wrong type no longer hides the rest: every one is reported, and so is what the
/// validation of the rest finds; what is missing only because a bad value was taken out is not.
#[test]
fn wrong_types_are_all_reported_with_the_rest() {
    let text = GOOD
        .replace("listen = [\"127.0.0.1:8080\"]", "listen = [\"127.0.0.1:8080\"]\nproxy_timeout = \"5\"")
        .replace("route = \"web1\"", "route = \"web1\"\nloadfactor = \"x\"\nlbfactor = 2")
        .replace("loadfactor = 2", "loadfactor = 0");
    let err = parse(&text).unwrap_err().to_string();
    let lines: Vec<&str> = err.lines().collect();
    let expected = [
        format!("{}: `proxy_timeout`: invalid type: string \"5\"", at(&text, "proxy_timeout = ")),
        format!(
            "{}: `balancer.default.member[0].loadfactor`: invalid type",
            at(&text, "route = \"web1\"\nloadfactor = ")
        ),
        format!("{}: `balancer.default.member[0].lbfactor`: unknown key", at(&text, "\"x\"\n")),
        format!(
            "{}: `balancer.default.member[1].loadfactor`: loadfactor must be 1 to 100",
            at(&text, "web2\"\nloadfactor = ")
        ),
    ];
    assert_eq!(lines.len(), expected.len(), "{err}");
    for (line, expected) in lines.iter().zip(&expected) {
        assert!(line.starts_with(expected.as_str()), "expected `{expected}`\n     got `{line}`\nin:\n{err}");
    }

    // A required field of the wrong type: its absence is not reported, the other wrong types
    // still are, and nothing is validated (its table is left out: its unknown key goes unseen).
    let text = text.replace("url = \"http://127.0.0.1:18001\"", "url = 5");
    let err = parse(&text).unwrap_err().to_string();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert!(lines[0].contains("`proxy_timeout`: invalid type"), "{err}");
    assert!(
        lines[1].starts_with(&format!("{}: `balancer.default.member[0].url`: invalid type", at(&text, "url = "))),
        "{err}"
    );
    assert!(lines[2].contains("`balancer.default.member[0].loadfactor`: invalid type"), "{err}");
}

/// A later stage (a plugin, the access log) points at a key's value, or at its table when the key
/// is not written.
#[test]
fn later_problems_point_at_their_key() {
    let c = parse(GOOD).unwrap();
    let p = c.problem("balancer.default.lbmethod", "no plugin named `x`");
    assert_eq!(p.location, Some(Location { line: 9, column: 12 }));
    let p = c.problem("balancer.default.fallback", "no plugin named `x`");
    assert_eq!(p.location.map(|l| l.line), Some(8), "the balancer's table");
    let shown = c.error(vec![p]).to_string();
    assert_eq!(shown, "test.toml:8:1: `balancer.default.fallback`: no plugin named `x`");
}

/// Health checks: a template, a condition, and the member's own keys over the template's.
#[test]
fn health_checks_resolve_templates_conditions_and_defaults() {
    let text = GOOD.replace("route = \"web1\"", "route = \"web1\"\nhctemplate = \"web\"\nhcfails = 2")
        + r#"
[hcexpr.up]
status = ["200-299", 404]
body_not = "maintenance"

[hctemplate.web]
hcmethod = "get11"
hcuri = "/health"
hcinterval = "500ms"
hcexpr = "up"
"#;
    let c = parse(&text).unwrap();
    let web1 = c.balancers[0].members[0].health.as_ref().expect("web1 is checked");
    assert_eq!(web1.method, HcMethod::Get11);
    assert_eq!(web1.uri, "/health");
    assert_eq!(web1.interval, Duration::from_millis(500));
    assert_eq!((web1.passes, web1.fails), (1, 2), "hcfails from the member, hcpasses Apache's default");
    assert_eq!(web1.expect.name, "up");
    assert_eq!(web1.expect.status, [200..=299, 404..=404]);
    assert!(c.balancers[0].members[1].health.is_none(), "no hcmethod, no check");

    // The member's path comes first; defaults are Apache's.
    let text = GOOD.replace("loadfactor = 2", "loadfactor = 2\nhcmethod = \"HEAD\"\nhcuri = \"ping\"");
    let web2 = parse(&text).unwrap().balancers[0].members[1].health.clone().expect("web2 is checked");
    assert_eq!((web2.method, web2.uri.as_str()), (HcMethod::Head, "/app/ping"));
    assert_eq!((web2.interval, web2.passes, web2.fails), (Duration::from_secs(30), 1, 1));
    assert_eq!(web2.expect.status, [200..=399]);
}

/// A bad health-check key in, its line and message out.
#[test]
fn health_check_mistakes_are_reported_at_their_key() {
    let member = |lines: &str| GOOD.replace("route = \"web1\"", &format!("route = \"web1\"\n{lines}"));
    let cases: &[(String, &str)] = &[
        (
            member("hcmethod = \"PING\""),
            "test.toml:14:12: `balancer.default.member[0].hcmethod`: `PING` is not a health-check method",
        ),
        (
            member("hcmethod = \"TCP\"\nhcinterval = \"50ms\""),
            "`balancer.default.member[0].hcinterval`: 50ms is shorter than the shortest interval",
        ),
        (member("hcmethod = \"TCP\"\nhcinterval = \"5m\""), "`m` is not a time unit"),
        (member("hcmethod = \"TCP\"\nhcfails = 0"), "`balancer.default.member[0].hcfails`: must be 1 to 1000, not 0"),
        (
            member("hcuri = \"/health\""),
            "test.toml:14:9: `balancer.default.member[0].hcuri`: `hcuri` is set but no `hcmethod`",
        ),
        (member("hcmethod = \"GET\"\nhcuri = \"/a b\""), "`/a b` is not a URL path"),
        (
            member("hcmethod = \"GET\"\nhcexpr = \"nope\""),
            "`balancer.default.member[0].hcexpr`: no [hcexpr.nope] (defined: none)",
        ),
        (member("hctemplate = \"nope\""), "no [hctemplate.nope] (defined: none)"),
        (
            member("hcmethod = \"HEAD\"\nhcexpr = \"body\"") + "\n[hcexpr.body]\nbody = \"ok\"\n",
            "hcexpr `body` looks at the body, which a HEAD check does not read",
        ),
        (
            GOOD.to_string() + "\n[hcexpr.x]\nstatus = [\"500-200\"]\n",
            "`hcexpr.x.status`: `500-200`: the range is empty",
        ),
        (GOOD.to_string() + "\n[hcexpr.x]\nbody = \"(\"\n", "`hcexpr.x.body`: bad regex"),
        (
            GOOD.to_string() + "\n[hctemplate.t]\nhcmethod = \"UDP\"\n",
            "`hctemplate.t.hcmethod`: `UDP` is not a health-check method",
        ),
        (GOOD.to_string() + "\n[hctemplate.t]\nhcpath = \"/\"\n", "`hctemplate.t.hcpath`: unknown key"),
    ];
    for (text, expected) in cases {
        let err = parse(text).expect_err(expected).to_string();
        assert!(err.contains(expected), "expected `{expected}` in: {err}");
        assert!(err.starts_with("test.toml:"), "no location in: {err}");
    }
}

/// `shutdown_timeout`: 30 s when not written, 0 accepted (exit without waiting), and a bad value
/// refused at its file, line and column like every other key.
#[test]
fn shutdown_timeout_defaults_to_30_seconds_and_may_be_0() {
    assert_eq!(parse(GOOD).unwrap().shutdown_timeout, Duration::from_secs(30));
    let with = |value: &str| {
        GOOD.replacen(
            "listen = [\"127.0.0.1:8080\"]",
            &format!("listen = [\"127.0.0.1:8080\"]\nshutdown_timeout = {value}"),
            1,
        )
    };
    assert_eq!(parse(&with("0")).unwrap().shutdown_timeout, Duration::ZERO);
    assert_eq!(parse(&with("5")).unwrap().shutdown_timeout, Duration::from_secs(5));
    for (value, message) in [
        ("\"5\"", "invalid type: string \"5\", expected u64"),
        ("-1", "invalid value: integer `-1`, expected u64"),
        ("99999999999", "more than a year of seconds: is this a typo?"),
    ] {
        let text = with(value);
        let err = parse(&text).expect_err(value).to_string();
        let expected = format!("{}: `shutdown_timeout`: {message}", at(&text, "shutdown_timeout = "));
        assert!(err.lines().count() == 1, "{value}: expected one problem, got:\n{err}");
        assert!(err.starts_with(&expected), "{value}:\nexpected `{expected}`\n     got `{err}`");
    }
}

/// Local handlers: a bad `[[vhost.location]]` in, its line and message out.
#[test]
fn local_handler_mistakes_are_reported_at_their_key() {
    let with = |location: &str| {
        GOOD.replace(
            "proxy_pass = [{ path = \"/\", to = \"balancer://default/\" }]",
            "proxy_pass = [{ path = \"/server-status\", to = \"!\" }, { path = \"/\", to = \"balancer://default/\" }]",
        )
        .replace("\n[balancer.default]", &format!("{location}\n[balancer.default]"))
    };
    let good = with(
        "[[vhost.location]]\npath = \"/server-status\"\nhandler = \"server-status\"\nrequire_ip = [\"10.0.0.0/8\", \"::1\"]\n",
    );
    let c = parse(&good).unwrap();
    assert_eq!(c.vhosts[0].locations[0].handler, Handler::ServerStatus);
    assert!(c.vhosts[0].locations[0].allows("10.1.2.3".parse().unwrap()));
    let cases: &[(&str, &str)] = &[
        ("path = \"/server-status\"\nhandler = \"server-status\"", "no `require_ip`"),
        ("path = \"/server-status\"\nhandler = \"info\"\nrequire_ip = []", "`info` is not a handler Fulcrum has"),
        (
            "path = \"/server-status\"\nhandler = \"server-status\"\nrequire_ip = [\"10.1\"]",
            "`10.1` is neither an IP address nor a network",
        ),
        ("path = \"/x\"\nhandler = \"server-status\"\nrequire_ip = []", "`/x` is proxied by proxy_pass `/`"),
        (
            "path = \"/server-status\"\nhandler = \"server-status\"\nrequire_ip = []\napi_token = \"0123456789abcdefg\"",
            "only the balancer-manager has an API",
        ),
        (
            "path = \"/server-status\"\nhandler = \"balancer-manager\"\nrequire_ip = []\napi_token = \"short\"",
            "at least 16 characters",
        ),
    ];
    for (lines, expected) in cases {
        let text = with(&format!("[[vhost.location]]\n{lines}\n"));
        let err = parse(&text).expect_err(lines).to_string();
        assert!(err.contains(expected), "{lines}: expected `{expected}` in: {err}");
        assert!(err.starts_with("test.toml:"), "{lines}: no location in: {err}");
    }
}

/// `listen` entries as strings (as always) or tables: the table's settings land on the listener
/// of the same position; an unknown key in a table, a duplicate address written either way, and
/// h2c with TLS are reported at their key and line.
#[test]
fn listen_entries_are_addresses_or_tables() {
    let text = GOOD.replace(
        "listen = [\"127.0.0.1:8080\"]",
        "listen = [\n  \"127.0.0.1:8080\",\n  { address = \"127.0.0.1:8081\", h2c = true },\n  \
         { address = \"127.0.0.1:8000\", redirect = \"https://www.example.com/\" },\n]",
    );
    let c = parse(&text).unwrap();
    assert_eq!(c.listen.len(), 3);
    let summary: Vec<(String, bool, Option<&str>, bool)> =
        c.listeners.iter().map(|l| (l.address.to_string(), l.h2c, l.redirect.as_deref(), l.tls.is_some())).collect();
    assert_eq!(
        summary,
        [
            ("127.0.0.1:8080".to_string(), false, None, false),
            ("127.0.0.1:8081".to_string(), true, None, false),
            ("127.0.0.1:8000".to_string(), false, Some("https://www.example.com"), false),
        ]
    );
    assert!(c.listener("127.0.0.1:8081".parse().unwrap(), 0).is_some_and(|l| l.h2c));
    assert!(c.listener("127.0.0.1:8081".parse().unwrap(), 1).is_none());

    let bad = GOOD.replace(
        "listen = [\"127.0.0.1:8080\"]",
        "listen = [\n  \"127.0.0.1:8080\",\n  { address = \"127.0.0.1:8080\", h2 = true },\n  \
         { address = \"127.0.0.1:8082\", tls_key = \"k.pem\", h2c = true },\n]",
    );
    let err = parse(&bad).unwrap_err().to_string();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 4, "{err}");
    assert!(
        lines[0].starts_with("test.toml:4:15: `listen[1].address`: 127.0.0.1:8080 is already `listen[0]`"),
        "{err}"
    );
    assert!(lines[1].starts_with("test.toml:4:33: `listen[1].h2`: unknown key"), "{err}");
    assert!(lines[2].contains("`listen[2].tls_certificate`: tls_key needs tls_certificate"), "{err}");
    assert!(lines[3].contains("`listen[2].h2c`: h2c is HTTP/2 without TLS"), "{err}");
}
