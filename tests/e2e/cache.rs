//! The plugin cache: the first start compiles a plugin and stores it, the next start loads it
//! compiled, and a damaged cache file is compiled again, never trusted.

use std::path::Path;

use fulcrum::plugin::builtin::TEST_PLUGIN_DIR;

use crate::support::*;

fn cache_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "cwasm")).collect())
        .unwrap_or_default();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compiled_once_then_loaded_and_a_damaged_file_is_recompiled() {
    let (web1, web2) = two_backends().await;
    let cache = tempfile::tempdir().unwrap();
    let config = balancer_config(
        &[(&web1.url(), "web1", 1), (&web2.url(), "web2", 1)],
        "lbmethod = \"fault-test\"",
        &format!("plugins_dir = {TEST_PLUGIN_DIR:?}\nplugin_cache_dir = {:?}", cache.path().display().to_string()),
    );
    let start = |what: &str| {
        let fulcrum = Fulcrum::start_with_log(&config, "fulcrum=debug");
        let log = fulcrum.log();
        assert!(log.contains(what), "expected `{what}`:\n{log}");
        fulcrum
    };

    // First start: compiled, and the cache now holds it (and the built-ins it used).
    let fulcrum = start("compiled");
    assert!(fulcrum.log().contains("fault-test.wasm in"), "{}", fulcrum.log());
    assert_eq!(get(&client(), &fulcrum.url("/"), &[]).await.status, 200);
    drop(fulcrum);
    let files = cache_files(cache.path());
    assert!(!files.is_empty(), "nothing was cached in {}", cache.path().display());

    // Second start: loaded compiled, and it routes.
    let fulcrum = start("from the plugin cache");
    assert!(!fulcrum.log().contains("compiled"), "{}", fulcrum.log());
    assert_eq!(get(&client(), &fulcrum.url("/"), &[]).await.status, 200);
    drop(fulcrum);

    // Damaged files: noticed, replaced, and the plugins still work.
    for f in &files {
        std::fs::write(f, b"not compiled code").unwrap();
    }
    let fulcrum = start("is unusable");
    assert!(fulcrum.log().contains("compiled"), "{}", fulcrum.log());
    assert_eq!(get(&client(), &fulcrum.url("/"), &[]).await.status, 200);
    assert_ne!(std::fs::read(&files[0]).unwrap(), b"not compiled code");
}
