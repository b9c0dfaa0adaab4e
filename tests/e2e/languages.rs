//! Plugins in every guest language, dropped into a running Fulcrum: each example under
//! `examples/plugins/` is built by its own `build.sh` with tool chains from the package registries
//! (tests/run installs them), copied into the plugin folder of a Fulcrum that started without it
//! (its balancer on the `fallback` built-in meanwhile), routes the next requests, and when the
//! file is removed the balancer falls back to byrequests again.
//!
//! Each table reads: client sends these headers from this address, this member answers.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::support::*;

/// One request and who must answer it.
pub struct Case {
    pub headers: &'static [(&'static str, &'static str)],
    /// The client's source address (a 127.0.0.0/8 address; 127.0.0.1 when `None`).
    pub from: Option<&'static str>,
    pub member: &'static str,
}

pub const fn case(headers: &'static [(&'static str, &'static str)], member: &'static str) -> Case {
    Case { headers, from: None, member }
}

/// Run `examples/plugins/EXAMPLE/build.sh OUT` with the tools tests/run installed; the built file.
pub fn build_example(example: &str, out_dir: &Path) -> PathBuf {
    let out = out_dir.join(format!("{example}.wasm"));
    let root = repo_root();
    let built = Command::new(root.join("examples/plugins").join(example).join("build.sh"))
        .arg(&out)
        .env("FULCRUM", env!("CARGO_BIN_EXE_fulcrum"))
        .output()
        .expect("run build.sh");
    assert!(
        built.status.success(),
        "examples/plugins/{example}/build.sh failed (tests/run installs its tool chain):\n{}{}",
        String::from_utf8_lossy(&built.stdout),
        String::from_utf8_lossy(&built.stderr)
    );
    out
}

fn client_from(addr: Option<&str>) -> TestClient {
    let mut connector = HttpConnector::new();
    connector.set_local_address(addr.map(|a| a.parse::<IpAddr>().expect("client address")));
    Client::builder(TokioExecutor::new()).build(connector)
}

/// Wait (bounded) until the log mentions `what`.
async fn logged(fulcrum: &Fulcrum, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !fulcrum.log().contains(what) {
        assert!(Instant::now() < deadline, "`{what}` never appeared in the log:\n{}", fulcrum.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Three requests without anything special: byrequests over three equal members answers each once.
async fn assert_byrequests(fulcrum: &Fulcrum, when: &str) {
    let client = client();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let answer = get(&client, &fulcrum.url("/"), &[]).await;
        assert_eq!(answer.status, 200, "{when}: {answer:?}\n{}", fulcrum.log());
        seen.push(answer.served_by().to_string());
    }
    seen.sort();
    assert_eq!(seen, ["web1", "web2", "web3"], "{when}: byrequests answers each member once");
}

/// The whole story for one plugin file: Fulcrum runs without it, the file is copied in and routes
/// `cases`, the file is removed and byrequests takes over again. `settings` are the plugin's
/// `[plugins.NAME]` lines (WASI grants, ...), empty for none.
pub async fn drop_in_then_remove(component: &Path, name: &str, settings: &str, lbmethod_config: &str, cases: &[Case]) {
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    let web = [
        EchoServer::start(any, "web1").await.unwrap(),
        EchoServer::start(any, "web2").await.unwrap(),
        EchoServer::start(any, "web3").await.unwrap(),
    ];
    let plugins = tempfile::tempdir().unwrap();
    let config = balancer_config(
        &[(&web[0].url(), "web1", 1), (&web[1].url(), "web2", 1), (&web[2].url(), "web3", 1)],
        &format!("lbmethod = {name:?}\nfallback = \"byrequests\"\nlbmethod_config = {lbmethod_config}"),
        &format!("plugins_dir = {:?}\n\n[plugins.{name}]\n{settings}\n", plugins.path().display().to_string()),
    );
    let fulcrum = Fulcrum::start(&config);
    logged(&fulcrum, &format!("lbmethod plugin `{name}` is not loaded (yet)")).await;
    assert_byrequests(&fulcrum, "before the plugin is installed").await;

    // Copied in the way deploy tools do: written aside, then renamed into place.
    let tmp = plugins.path().join(format!(".{name}.tmp"));
    std::fs::copy(component, &tmp).unwrap();
    std::fs::rename(&tmp, plugins.path().join(format!("{name}.wasm"))).unwrap();
    logged(&fulcrum, &format!("lbmethod plugin `{name}` reloaded")).await;
    for (i, c) in cases.iter().enumerate() {
        let answer = get(&client_from(c.from), &fulcrum.url("/"), c.headers).await;
        assert_eq!(
            answer.served_by(),
            c.member,
            "case {i}: client from {:?} sends {:?}: {answer:?}\n{}",
            c.from.unwrap_or("127.0.0.1"),
            c.headers,
            fulcrum.log()
        );
    }

    std::fs::remove_file(plugins.path().join(format!("{name}.wasm"))).unwrap();
    logged(&fulcrum, &format!("lbmethod plugin `{name}` was removed: now using `byrequests`")).await;
    assert_byrequests(&fulcrum, "after the plugin was removed").await;
}

/// C (Debian clang + wasi-libc, bindings from `fulcrum plugin bindings c`): route by client network.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_plugin_routes_by_client_network() {
    let out = tempfile::tempdir().unwrap();
    let component = build_example("c-netroute", out.path());
    let from = |addr, member| Case { headers: &[], from: Some(addr), member };
    drop_in_then_remove(
        &component,
        "netroute",
        "",
        r#"{ "127.0.0.2/32" = "web2", "127.0.3.0/24" = "web3" }"#,
        &[
            from("127.0.0.2", "web2"),
            from("127.0.3.7", "web3"),
            from("127.0.0.2", "web2"),
            from("127.0.3.200", "web3"),
            // Other clients: round robin over the candidates.
            from("127.0.0.1", "web1"),
            from("127.0.9.9", "web2"),
            from("127.0.0.1", "web3"),
        ],
    )
    .await;
}

/// JavaScript (componentize-qjs from npm): consistent hashing on the `x-user` header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_plugin_routes_by_consistent_hash() {
    let out = tempfile::tempdir().unwrap();
    let component = build_example("js-hash", out.path());
    // Which member a user lands on is fixed by the hash: the expected members were worked out by
    // running hash.js's `hash` under Node.js (alice web2, bob web1, carol web3).
    drop_in_then_remove(
        &component,
        "hash",
        "",
        "{ header = \"x-user\" }",
        &[
            case(&[("x-user", "alice")], "web2"),
            case(&[("x-user", "bob")], "web1"),
            case(&[("x-user", "carol")], "web3"),
            case(&[("x-user", "alice")], "web2"),
            case(&[("x-user", "bob")], "web1"),
            case(&[("X-User", "carol")], "web3"),
            // No header: round robin.
            case(&[], "web1"),
            case(&[], "web2"),
            case(&[], "web3"),
        ],
    )
    .await;
}

/// Python (componentize-py from PyPI): header-based canary routing. Its runtime imports all of WASI
/// and calls `wasi:cli` and `wasi:random` as it starts, so the config grants those two (no clocks).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_plugin_routes_canary_traffic() {
    let out = tempfile::tempdir().unwrap();
    let component = build_example("python-canary", out.path());
    drop_in_then_remove(
        &component,
        "canary",
        // Python's runtime reads its (empty) environment and seeds its hashes when it starts, and
        // leaks a little per call (README): its instance is replaced every 100,000 calls.
        "wasi = [\"cli\", \"random\"]\nrecycle_after_calls = 100000",
        "{ canary_route = \"web2\" }",
        &[
            case(&[], "web1"),
            case(&[], "web3"),
            case(&[("x-canary", "1")], "web2"),
            case(&[], "web1"),
            case(&[("x-canary", "1")], "web2"),
            case(&[], "web3"),
        ],
    )
    .await;
}

/// Zig (PyPI ziglang, bindings from `fulcrum plugin bindings c`): A/B by cookie.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zig_plugin_routes_a_b_by_cookie() {
    let out = tempfile::tempdir().unwrap();
    let component = build_example("zig-ab", out.path());
    drop_in_then_remove(
        &component,
        "ab",
        "",
        r#"{ cookie = "ab", default = "a", a = "web1", b = "web2 web3" }"#,
        &[
            case(&[], "web1"),
            case(&[("cookie", "ab=b")], "web2"),
            case(&[("cookie", "theme=dark; ab=b")], "web3"),
            case(&[("cookie", "ab=a")], "web1"),
            case(&[("cookie", "ab=b; theme=dark")], "web2"),
            // An unknown arm, or another cookie only: the default arm.
            case(&[("cookie", "ab=zzz")], "web1"),
            case(&[("cookie", "abc=b")], "web1"),
        ],
    )
    .await;
}

/// Rust through the SDK's `Rules` trait: a rules plugin that gives every request an id, kept from
/// the client when it sent a sane one, else Fulcrum's UNIQUE_ID; the member and the client see the
/// same id. Client sends X, member sees Y, client gets Y back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_rules_plugin_adds_a_request_id() {
    let plugins = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let built = build_example("rust-request-id", out.path());
    std::fs::copy(&built, plugins.path().join("request-id.wasm")).unwrap();
    let web1 = EchoServer::start("127.0.0.1:0".parse().unwrap(), "web1").await.unwrap();
    let config = format!(
        "listen = [\"127.0.0.1:0\"]\nplugins_dir = {:?}\n\n[[vhost]]\nserver_name = \"www.example.com\"\n\
         proxy_pass = [{{ path = \"/\", to = \"balancer://default/\" }}]\n\n[[vhost.rules]]\nplugin = \"request-id\"\n\n\
         [balancer.default]\n[[balancer.default.member]]\nurl = \"{}\"\n",
        plugins.path().display().to_string(),
        web1.url()
    );
    let fulcrum = Fulcrum::start(&config);
    let client = client();
    let mut generated = Vec::new();
    for (sent, kept) in [(None, false), (Some("abc-123.x_y"), true), (Some("not an id!"), false), (None, false)] {
        let headers: Vec<(&str, &str)> = sent.iter().map(|v| ("x-request-id", *v)).collect();
        let answer = get(&client, &fulcrum.url("/"), &headers).await;
        assert_eq!(answer.status, 200, "{answer:?}\n{}", fulcrum.log());
        let returned = answer.headers.get("x-request-id").map(|v| v.to_str().unwrap().to_string());
        let Some(id) = returned else { panic!("sent {sent:?}: no X-Request-Id came back: {answer:?}") };
        let seen: Vec<&str> = answer.body.lines().filter_map(|l| l.strip_prefix("header: x-request-id: ")).collect();
        assert_eq!(seen, [id.as_str()], "sent {sent:?}: the member saw {seen:?}, the client got {id}");
        if kept {
            assert_eq!(Some(id.as_str()), sent);
        } else {
            assert!(id.len() == 24 && id.bytes().all(|b| b.is_ascii_hexdigit()), "sent {sent:?}: generated {id}");
            generated.push(id);
        }
    }
    generated.dedup();
    assert_eq!(generated.len(), 3, "generated ids must differ: {generated:?}");
}
