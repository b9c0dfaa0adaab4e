//! The plugin cache: the first start compiles a plugin and stores it, the next start loads it
//! compiled, and a damaged cache file is compiled again, never trusted.

use std::path::Path;

use fulcrum::plugin::builtin::{TEST_PLUGIN_DIR, TEST_PLUGINS_APART_DIR};

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

/// `plugin_cache_max_mib`: storing a newly compiled plugin keeps the folder under its bound by
/// removing the least recently used files, never those in use; loading a file marks it used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_is_kept_under_its_bound_least_recently_used_first() {
    let (web1, web2) = two_backends().await;
    let cache = tempfile::tempdir().unwrap();
    // The second start's folder: the first one's plugins, and one more to compile and store.
    let more = tempfile::tempdir().unwrap();
    for file in std::fs::read_dir(TEST_PLUGIN_DIR).unwrap() {
        let file = file.unwrap().path();
        std::fs::copy(&file, more.path().join(file.file_name().unwrap())).unwrap();
    }
    let extra = Path::new(TEST_PLUGINS_APART_DIR).join("rules-fault-test.wasm");
    std::fs::copy(&extra, more.path().join("rules-fault-test.wasm")).unwrap();
    let config = |dir: &Path| {
        balancer_config(
            &[(&web1.url(), "web1", 1), (&web2.url(), "web2", 1)],
            "lbmethod = \"fault-test\"",
            &format!(
                "plugins_dir = {:?}\nplugin_cache_dir = {:?}\nplugin_cache_max_mib = 2",
                dir.display().to_string(),
                cache.path().display().to_string()
            ),
        )
    };
    let day = std::time::Duration::from_secs(86_400);
    let age = |path: &Path, by: std::time::Duration| {
        let file = std::fs::File::options().write(true).open(path).unwrap();
        file.set_modified(std::time::SystemTime::now() - by).unwrap();
    };

    // First start: the test plugins of the folder are compiled and stored.
    let fulcrum = Fulcrum::start(&config(Path::new(TEST_PLUGIN_DIR)));
    assert_eq!(get(&client(), &fulcrum.url("/"), &[]).await.status, 200);
    drop(fulcrum);
    let first = cache_files(cache.path());
    assert!(!first.is_empty());
    // Since then: unused for 40 days, and three 1 MiB files of other plugins used 30, 20, 10 days ago.
    for path in &first {
        age(path, 40 * day);
    }
    let other = |tag: char| cache.path().join(format!("{}-00000000000000ff.cwasm", tag.to_string().repeat(64)));
    for (tag, days) in [('a', 30), ('b', 20), ('c', 10)] {
        std::fs::write(other(tag), vec![0u8; 1 << 20]).unwrap();
        age(&other(tag), days * day);
    }

    // Second start: the first folder's plugins load from the cache (and are marked used);
    // rules-fault-test is compiled and stored, which brings the folder over 2 MiB: the files used
    // 30 and 20 days ago go.
    let fulcrum = Fulcrum::start_with_log(&config(more.path()), "fulcrum=debug");
    assert_eq!(get(&client(), &fulcrum.url("/"), &[]).await.status, 200);
    let now = cache_files(cache.path());
    assert!(!now.contains(&other('a')) && !now.contains(&other('b')), "{now:?}");
    assert!(now.contains(&other('c')), "{now:?}");
    assert_eq!(now.len(), first.len() + 2, "the first start's files, one of the others, rules-fault-test: {now:?}");
    for path in &first {
        let modified = std::fs::metadata(path).unwrap().modified().unwrap();
        assert!(modified.elapsed().unwrap() < day, "{} was loaded but not marked used", path.display());
    }
    assert!(fulcrum.log().contains("least recently used; the cache is kept under 2 MiB"), "{}", fulcrum.log());
}
