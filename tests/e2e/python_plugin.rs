//! A selector plugin written in Python (examples/plugins/python-canary, built with componentize-py)
//! routes traffic: header-based canary routing. Python's runtime imports WASI, so this also covers
//! a WASI-importing plugin running against Fulcrum's empty WASI context.

use std::process::Command;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_plugin_routes_canary_traffic() {
    let componentize_py = std::env::var("COMPONENTIZE_PY")
        .unwrap_or_else(|_| repo_root().join("target/py-venv/bin/componentize-py").display().to_string());
    assert!(
        std::path::Path::new(&componentize_py).exists(),
        "componentize-py not found at {componentize_py}: run tests/run (it installs it into target/py-venv)"
    );
    let plugins = tempfile::tempdir().unwrap();
    let out = plugins.path().join("canary.wasm");
    let built = Command::new(repo_root().join("examples/plugins/python-canary/build.sh"))
        .arg(&out)
        .env("COMPONENTIZE_PY", &componentize_py)
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}{}",
        String::from_utf8_lossy(&built.stdout),
        String::from_utf8_lossy(&built.stderr)
    );

    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    let (web1, canary, web3) = (
        EchoServer::start(any, "web1").await.unwrap(),
        EchoServer::start(any, "canary").await.unwrap(),
        EchoServer::start(any, "web3").await.unwrap(),
    );
    let config = balancer_config(
        &[(&web1.url(), "web1", 1), (&canary.url(), "canary", 1), (&web3.url(), "web3", 1)],
        "lbmethod = \"canary\"",
        &format!("plugins_dir = {:?}", plugins.path().display().to_string()),
    );
    let fulcrum = Fulcrum::start(&config);
    let client = client();
    // Client sends x-canary (or not); the member that answers.
    let cases =
        [(None, "web1"), (None, "web3"), (Some("1"), "canary"), (None, "web1"), (Some("1"), "canary"), (None, "web3")];
    for (header, member) in cases {
        let headers: Vec<(&str, &str)> = header.iter().map(|v| ("x-canary", *v)).collect();
        let answer = get(&client, &fulcrum.url("/"), &headers).await;
        assert_eq!(answer.served_by(), member, "x-canary: {header:?}: {answer:?}\n{}", fulcrum.log());
    }
}
