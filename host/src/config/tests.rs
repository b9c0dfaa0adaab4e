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
        ("url = \"http://127.0.0.1:18001\"", "url = \"https://127.0.0.1:18001\"", "scheme `https` is not supported"),
        ("lbmethod = \"byrequests\"", "lbmethod = 3", "invalid type"),
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

#[test]
fn broken_toml_names_its_line() {
    let err = parse("listen = [\"127.0.0.1:8080\"\n[[vhost]]\n").unwrap_err().to_string();
    assert!(err.starts_with("test.toml:"), "{err}");
}
