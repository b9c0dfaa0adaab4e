//! 1,000 plugin reloads keep memory flat: a process of its own (so no other test moves its RSS),
//! reloading a plugin file through `Runtime::reload_plugins` (what the folder watcher calls) and
//! reading its resident set size from /proc. Twice: compiling at every reload (no plugin cache),
//! then loading compiled code from the plugin cache (mapped files).

use std::path::Path;

use fulcrum::config::Config;
use fulcrum::plugin::builtin::{BUILTIN_PLUGINS, TEST_PLUGIN_DIR};
use fulcrum::runtime::Runtime;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[test]
fn a_thousand_reloads_keep_rss_flat() {
    let cache = tempfile::tempdir().unwrap();
    thousand_reloads("compiling", "");
    thousand_reloads("from the plugin cache", &cache.path().display().to_string());
}

fn thousand_reloads(how: &str, cache_dir: &str) {
    let plugins = tempfile::tempdir().unwrap();
    let a = std::fs::read(Path::new(TEST_PLUGIN_DIR).join("fault-test.wasm")).unwrap();
    let b = BUILTIN_PLUGINS.iter().find(|(n, ..)| *n == "byrequests").unwrap().1.to_vec();
    let file = plugins.path().join("picker.wasm");
    std::fs::write(&file, &a).unwrap();
    let config = format!(
        "listen = [\"127.0.0.1:0\"]\nplugins_dir = {:?}\nplugin_cache_dir = {cache_dir:?}\n[[vhost]]\nserver_name = \"x\"\n\
         proxy_pass = [{{ path = \"/\", to = \"balancer://d/\" }}]\n[balancer.d]\nlbmethod = \"picker\"\n\
         [[balancer.d.member]]\nurl = \"http://127.0.0.1:1\"\n[[balancer.d.member]]\nurl = \"http://127.0.0.1:2\"\n",
        plugins.path().display().to_string()
    );
    let runtime = Runtime::build(Config::parse(&config, Path::new("memory.toml")).unwrap()).unwrap();

    let mut after_warmup = 0;
    for i in 1..=1000 {
        std::fs::write(&file, if i % 2 == 0 { &a } else { &b }).unwrap();
        let rescan = runtime.reload_plugins();
        assert_eq!(rescan.changed, ["picker"], "reload {i}: {rescan:?}");
        if i == 100 {
            after_warmup = rss_kib();
        }
    }
    let after = rss_kib();
    println!("1000 reloads, {how}: RSS {} MiB after 100, {} MiB after 1000", after_warmup / 1024, after / 1024);
    assert!(after * 10 <= after_warmup * 11, "{how}: RSS grew from {after_warmup} KiB to {after} KiB");
}
