//! Plugins built against the previous interfaces, `fulcrum:plugin@0.1.0` to `@0.4.0`, keep
//! working: real components built by the releases that spoke them (`tests/fixtures/wit-0.1.0/` to
//! `tests/fixtures/wit-0.4.0/`: the byrequests selector and the apache-rules plugin, and for 0.3.0,
//! whose selectors were the first to read load reports, the heartbeat selector), loaded from a
//! plugins folder under names of their own, balance and rewrite headers exactly as the current
//! built-ins do.

use crate::support::*;

fn values<'a>(answer: &'a Answer, name: &str) -> Vec<&'a str> {
    answer.headers.get_all(name).iter().map(|v| v.to_str().unwrap()).collect()
}

fn seen_header<'a>(answer: &'a Answer, name: &str) -> Option<&'a str> {
    answer.body.lines().find_map(|l| l.strip_prefix(&format!("header: {name}: ")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_built_for_0_1_0_balance_and_set_the_guides_headers() {
    old_plugins_balance_and_set_the_guides_headers("0.1.0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_built_for_0_2_0_balance_and_set_the_guides_headers() {
    old_plugins_balance_and_set_the_guides_headers("0.2.0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_built_for_0_3_0_balance_and_set_the_guides_headers() {
    old_plugins_balance_and_set_the_guides_headers("0.3.0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_built_for_0_4_0_balance_and_set_the_guides_headers() {
    old_plugins_balance_and_set_the_guides_headers("0.4.0").await;
}

/// 0.3.0 passed each member's load report in a column of its own; the heartbeat built then still
/// gets them (packed for 0.4.0 selectors, unpacked for it) and balances by them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_built_for_0_3_0_still_follows_the_load_reports() {
    let plugins = tempfile::tempdir().unwrap();
    let file = plugins.path().join("old-heartbeat.wasm");
    std::fs::copy(repo_root().join("tests/fixtures/wit-0.3.0/heartbeat.wasm"), &file).unwrap();
    let (code, out, err) = fulcrum_cmd(&["plugin", "inspect", file.to_str().unwrap()], None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("wit: fulcrum:plugin@0.3.0") && out.contains("worlds: selector"), "{out}");
    let top = format!("plugins_dir = {:?}\n", plugins.path().display().to_string());
    crate::health::heartbeat_follows_the_reports("old-heartbeat", &top).await;
}

async fn old_plugins_balance_and_set_the_guides_headers(version: &str) {
    let (web1, web2) = two_backends().await;
    let plugins = tempfile::tempdir().unwrap();
    let fixtures = repo_root().join(format!("tests/fixtures/wit-{version}"));
    std::fs::copy(fixtures.join("byrequests.wasm"), plugins.path().join("old-byrequests.wasm")).unwrap();
    std::fs::copy(fixtures.join("apache-rules.wasm"), plugins.path().join("old-apache-rules.wasm")).unwrap();

    // `plugin inspect` names the version the file was built against.
    let file = plugins.path().join("old-apache-rules.wasm");
    let (code, out, err) = fulcrum_cmd(&["plugin", "inspect", file.to_str().unwrap()], None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("wit: fulcrum:plugin@{version}")) && out.contains("worlds: rules"), "{out}");

    // The guide's set-up, with both plugins replaced by the old files.
    let config = std::fs::read_to_string(repo_root().join("examples/apache-guide.toml"))
        .unwrap()
        .replace("127.0.0.1:8080", "127.0.0.1:0")
        .replace("http://127.0.0.1:18001", &web1.url())
        .replace("http://127.0.0.1:18002", &web2.url())
        .replace("access_log = \"-\"", &format!("plugins_dir = {:?}", plugins.path().display().to_string()))
        .replace("plugin = \"apache-rules\"", "plugin = \"old-apache-rules\"")
        .replace("lbmethod = \"byrequests\"", "lbmethod = \"old-byrequests\"");
    assert!(config.contains("old-apache-rules") && config.contains("old-byrequests"));
    let fulcrum = Fulcrum::start(&config);
    let client = client();

    // byrequests' order, cookie and X-Balance lines from the old rules, X-Forwarded-For rewritten
    // (SetEnvIf + <If> on env('FORWARD_IP')), all through the old interface.
    let mut served = Vec::new();
    for (i, xff) in [None, Some("1.2.3.4, 5.6.7.8"), None, Some("garbage")].into_iter().enumerate() {
        let headers: Vec<(&str, &str)> = xff.iter().map(|v| ("x-forwarded-for", *v)).collect();
        let answer = get(&client, &fulcrum.url("/"), &headers).await;
        assert_eq!(answer.status, 200, "request {i}: {}", fulcrum.log());
        let route = answer.served_by().to_string();
        let expected_xff = if xff == Some("1.2.3.4, 5.6.7.8") { "1.2.3.4, 127.0.0.1" } else { "127.0.0.1, 127.0.0.1" };
        assert_eq!(seen_header(&answer, "x-forwarded-for"), Some(expected_xff), "request {i}");
        assert_eq!(values(&answer, "set-cookie"), [format!("BALANCEID=balancer.{route}; path=/;")], "request {i}");
        assert_eq!(
            values(&answer, "x-balance"),
            ["BALANCER_ROUTE_CHANGED=1".to_string(), format!("BALANCER_WORKER_ROUTE={route}")],
            "request {i}"
        );
        served.push(route);
    }
    assert_eq!(served, ["web1", "web2", "web1", "web2"]);

    // A sticky request: the old selector's `sticky` call, the old rules' session route line.
    let answer = get(&client, &fulcrum.url("/"), &[("cookie", "BALANCEID=balancer.web2")]).await;
    assert_eq!(answer.served_by(), "web2");
    assert!(values(&answer, "set-cookie").is_empty());
    assert_eq!(values(&answer, "x-balance"), ["BALANCER_WORKER_ROUTE=web2", "BALANCER_SESSION_ROUTE=web2"]);
}
