//! The guide's configuration (`examples/apache-guide.toml`) as the benchmarks run it: on a
//! loopback port, its two members at given addresses, the access log off, with or without its
//! `[[vhost.rules]]`. Shared by the `load` and `request` benchmarks (`#[path]` module).

use std::net::SocketAddr;

const GUIDE: &str = include_str!("../../../examples/apache-guide.toml");

/// The guide's config listening on `port` (0: any) with members `web1` and `web2`.
pub fn guide_config(port: u16, [web1, web2]: [SocketAddr; 2], rules: bool) -> String {
    let mut out = String::new();
    let mut in_rules = false;
    let mut quotes = 0;
    for line in GUIDE.lines() {
        if line.trim() == "[[vhost.rules]]" && !rules {
            in_rules = true;
            continue;
        }
        if in_rules {
            // The block ends with the second ''' (the directives' closing quotes).
            quotes += line.matches("'''").count();
            in_rules = quotes < 2;
            continue;
        }
        if line.starts_with("access_log") || line.starts_with("log_format") {
            continue;
        }
        let line = line
            .replace("\"127.0.0.1:8080\"", &format!("\"127.0.0.1:{port}\""))
            .replace("http://127.0.0.1:18001", &format!("http://{web1}"))
            .replace("http://127.0.0.1:18002", &format!("http://{web2}"));
        out.push_str(&line);
        out.push('\n');
    }
    for needle in [format!("127.0.0.1:{port}"), format!("http://{web1}"), format!("http://{web2}")] {
        assert!(out.contains(&needle), "examples/apache-guide.toml changed: {needle} not substituted");
    }
    assert_eq!(out.contains("[[vhost.rules]]"), rules, "the guide's [[vhost.rules]] block");
    out
}
