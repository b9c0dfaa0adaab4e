//! From nothing to routed traffic with the Rust SDK: `fulcrum plugin new`, a Wasm build,
//! `fulcrum plugin componentize`, then dropped into a running Fulcrum's plugin folder: requests are
//! routed by it, and by byrequests again once it is removed.

use std::process::Command;

use crate::languages::case;
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_rust_plugin_routes_traffic() {
    let work = tempfile::tempdir().unwrap();
    let (code, out, err) = fulcrum_cmd(&["plugin", "new", "canary", "--dir", work.path().to_str().unwrap()], None);
    assert_eq!(code, 0, "{out}{err}");
    // Self-contained: a copy of the SDK and the WIT inside the crate, nothing outside it.
    let manifest = std::fs::read_to_string(work.path().join("canary/Cargo.toml")).unwrap();
    assert!(manifest.contains("fulcrum-sdk = { path = \"fulcrum-sdk\""), "{manifest}");
    for file in ["fulcrum-sdk/Cargo.toml", "fulcrum-sdk/src/lib.rs", "wit/worlds.wit"] {
        assert!(work.path().join("canary").join(file).is_file(), "no {file}");
    }

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
    let module = target.join("wasm32-unknown-unknown/release/canary.wasm");
    let component = work.path().join("canary.wasm");
    let (code, out, err) =
        fulcrum_cmd(&["plugin", "componentize", module.to_str().unwrap(), "-o", component.to_str().unwrap()], None);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = fulcrum_cmd(&["plugin", "inspect", component.to_str().unwrap()], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("worlds: selector"), "{out}");

    // Client sends x-pin (or not); the member that answers.
    crate::languages::drop_in_then_remove(
        &component,
        "canary",
        "",
        "{}",
        &[
            case(&[("x-pin", "web2")], "web2"),
            case(&[("x-pin", "web2")], "web2"),
            case(&[], "web1"),
            case(&[], "web2"),
            case(&[("x-pin", "web1")], "web1"),
            case(&[], "web3"),
        ],
    )
    .await;
}
