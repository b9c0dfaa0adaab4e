//! From nothing to routed traffic with the Rust SDK: `fulcrum plugin new`, a Wasm build,
//! `fulcrum plugin componentize`, a plugin folder, and requests routed by the new plugin.

use std::process::Command;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_rust_plugin_routes_traffic() {
    let work = tempfile::tempdir().unwrap();
    let (code, out, err) = fulcrum_cmd(&["plugin", "new", "canary", "--dir", work.path().to_str().unwrap()], None);
    assert_eq!(code, 0, "{out}{err}");

    // Build it as its README says (a target dir under ours, so later runs are incremental).
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target = repo_root().join("target/plugin-new-test");
    let built = Command::new(cargo)
        .args(["build", "--release", "--target", "wasm32-unknown-unknown"])
        .current_dir(work.path().join("canary"))
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .output()
        .unwrap();
    assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));
    let plugins = work.path().join("plugins.d");
    std::fs::create_dir(&plugins).unwrap();
    let module = target.join("wasm32-unknown-unknown/release/canary.wasm");
    let component = plugins.join("canary.wasm");
    let (code, out, err) =
        fulcrum_cmd(&["plugin", "componentize", module.to_str().unwrap(), "-o", component.to_str().unwrap()], None);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = fulcrum_cmd(&["plugin", "inspect", component.to_str().unwrap()], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("worlds: selector"), "{out}");

    let (web1, web2) = two_backends().await;
    let config = balancer_config(
        &[(&web1.url(), "web1", 1), (&web2.url(), "web2", 1)],
        "lbmethod = \"canary\"",
        &format!("plugins_dir = {:?}", plugins.display().to_string()),
    );
    let fulcrum = Fulcrum::start(&config);
    let client = client();
    // Client sends x-pin (or not); the member that answers.
    let cases =
        [(Some("web2"), "web2"), (Some("web2"), "web2"), (None, "web1"), (None, "web2"), (Some("web1"), "web1")];
    for (pin, member) in cases {
        let headers: Vec<(&str, &str)> = pin.iter().map(|p| ("x-pin", *p)).collect();
        assert_eq!(get(&client, &fulcrum.url("/"), &headers).await.served_by(), member, "x-pin: {pin:?}");
    }
}
