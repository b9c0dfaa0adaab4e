//! The plugin folder's watcher: a file dropped in is looked at once, and a quiet folder is not
//! rescanned (a rescan reads the folder, and reading must not start the next rescan).

use std::time::{Duration, Instant};

use crate::support::*;

/// Lines of `log` that say a rescan happened (logged at debug level, one per rescan).
fn rescans(log: &str) -> usize {
    log.matches("plugin rescan of").count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_file_is_reported_once_and_a_quiet_folder_is_not_rescanned() {
    let (web1, web2) = two_backends().await;
    let plugins = tempfile::tempdir().unwrap();
    let config = balancer_config(
        &[(&web1.url(), "web1", 1), (&web2.url(), "web2", 1)],
        "",
        &format!("plugins_dir = {:?}", plugins.path().display().to_string()),
    );
    let fulcrum = Fulcrum::start_with_log(&config, "fulcrum=debug");

    // Not Wasm at all; a core module (not a component); a file named like a built-in.
    let core = plugins.path().join("core.wasm");
    std::fs::write(plugins.path().join("broken.wasm"), b"these bytes are not wasm").unwrap();
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    std::fs::write(plugins.path().join("byrequests.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let reported = |log: &str| log.lines().filter(|l| l.contains("plugin reload:")).count();
    let deadline = Instant::now() + Duration::from_secs(30);
    while reported(&fulcrum.log()) < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let log = fulcrum.log();
    assert_eq!(reported(&log), 3, "{log}");
    let scans = rescans(&log);
    assert!(scans >= 1, "no rescan was logged:\n{log}");

    // Two seconds of quiet: no rescan, no further error.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let log = fulcrum.log();
    assert_eq!(rescans(&log), scans, "the folder was rescanned while nothing changed:\n{log}");
    let lines = |needle: &str| log.lines().filter(|l| l.contains("plugin reload:") && l.contains(needle)).count();
    assert_eq!(lines("broken.wasm"), 1, "{log}");
    assert_eq!(lines("like the built-in plugin"), 1, "{log}");
    let componentize = format!("`fulcrum plugin componentize {} -o OUT.wasm`", core.display());
    assert_eq!(lines(&componentize), 1, "expected `{componentize}` once in:\n{log}");

    // The proxy still serves, with its built-in lbmethod.
    assert_eq!(get(&client(), &fulcrum.url("/"), &[]).await.status, 200);
}
