//! Hot reload of the plugin folder: replacing a plugin file changes routing without dropping a
//! request; a broken file keeps the old plugin; removing it falls back to the built-in.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use fulcrum::plugin::builtin::{BUILTIN_PLUGINS, TEST_PLUGIN_DIR};

use crate::support::*;

fn builtin(name: &str) -> &'static [u8] {
    BUILTIN_PLUGINS.iter().find(|(n, ..)| *n == name).map(|(_, bytes, _)| *bytes).unwrap()
}

fn fault_test() -> Vec<u8> {
    std::fs::read(Path::new(TEST_PLUGIN_DIR).join("fault-test.wasm")).unwrap()
}

/// Replace a file the way deploy tools do: write aside, then rename over.
fn install(dir: &Path, name: &str, bytes: &[u8]) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

/// Members answering 4 requests, counted.
async fn counts(client: &TestClient, fulcrum: &Fulcrum) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for _ in 0..4 {
        let answer = get(client, &fulcrum.url("/"), &[]).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        *counts.entry(answer.served_by().to_string()).or_default() += 1;
    }
    counts
}

/// Wait (bounded) until the log mentions `what`.
async fn logged(fulcrum: &Fulcrum, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !fulcrum.log().contains(what) {
        assert!(Instant::now() < deadline, "`{what}` never appeared in the log:\n{}", fulcrum.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn split(web1: usize, web2: usize) -> BTreeMap<String, usize> {
    BTreeMap::from([("web1".to_string(), web1), ("web2".to_string(), web2)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_breaking_and_removing_a_plugin_file() {
    let (web1, web2) = two_backends().await;
    let plugins = tempfile::tempdir().unwrap();
    install(plugins.path(), "picker.wasm", &fault_test());
    let config = balancer_config(
        &[(&web1.url(), "web1", 1), (&web2.url(), "web2", 3)],
        "lbmethod = \"picker\"\nfallback = \"byrequests\"",
        &format!("plugins_dir = {:?}", plugins.path().display().to_string()),
    );
    let fulcrum = Fulcrum::start(&config);
    let client = client();

    // fault-test is a plain round robin: weights ignored.
    assert_eq!(counts(&client, &fulcrum).await, split(2, 2));

    // Replaced by byrequests: loadfactor 1:3 now counts.
    install(plugins.path(), "picker.wasm", builtin("byrequests"));
    logged(&fulcrum, "lbmethod plugin `picker` reloaded").await;
    assert_eq!(counts(&client, &fulcrum).await, split(1, 3));

    // A broken file: logged with its name, the loaded plugin stays.
    install(plugins.path(), "picker.wasm", b"\0asm not really");
    logged(&fulcrum, "picker.wasm").await;
    logged(&fulcrum, "keeping the previous version").await;
    assert_eq!(counts(&client, &fulcrum).await, split(1, 3));

    // Removed: the balancer falls back to its configured built-in.
    std::fs::remove_file(plugins.path().join("picker.wasm")).unwrap();
    logged(&fulcrum, "lbmethod plugin `picker` was removed: now using `byrequests`").await;
    assert_eq!(counts(&client, &fulcrum).await, split(1, 3));
}

/// 200 replacements of the plugin file while a client keeps sending requests: none fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_replacements_under_load_fail_no_request() {
    let (web1, web2) = two_backends().await;
    let plugins = tempfile::tempdir().unwrap();
    let (a, b) = (fault_test(), builtin("byrequests").to_vec());
    install(plugins.path(), "picker.wasm", &a);
    let config = balancer_config(
        &[(&web1.url(), "web1", 1), (&web2.url(), "web2", 1)],
        "lbmethod = \"picker\"",
        &format!("plugins_dir = {:?}", plugins.path().display().to_string()),
    );
    let fulcrum = Fulcrum::start(&config);
    let url = fulcrum.url("/");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (client, url, stop) = (client(), url.clone(), stop.clone());
            tokio::spawn(async move {
                let mut statuses = BTreeMap::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let status = get(&client, &url, &[]).await.status.as_u16();
                    *statuses.entry(status).or_insert(0usize) += 1;
                }
                statuses
            })
        })
        .collect();
    for i in 0..200 {
        install(plugins.path(), "picker.wasm", if i % 2 == 0 { &b } else { &a });
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    logged(&fulcrum, "lbmethod plugin `picker` reloaded").await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total: BTreeMap<u16, usize> = BTreeMap::new();
    for task in load {
        for (status, n) in task.await.unwrap() {
            *total.entry(status).or_default() += n;
        }
    }
    let reloads = fulcrum.log().matches("lbmethod plugin `picker` reloaded").count();
    println!("200 replacements, {reloads} reloads, answers {total:?}");
    assert_eq!(total.keys().copied().collect::<Vec<_>>(), [200], "every request succeeded: {total:?}");
    assert!(reloads > 1, "the replacements were picked up ({reloads} reloads)");
}

/// A file named like a built-in is refused unless the config lets it shadow the built-in; then it
/// replaces it, and removing the file brings the built-in back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_shadows_a_built_in_only_when_allowed() {
    let (web1, web2) = two_backends().await;
    let plugins = tempfile::tempdir().unwrap();
    install(plugins.path(), "byrequests.wasm", &fault_test());
    let members = [(web1.url(), "web1", 1), (web2.url(), "web2", 3)];
    let members: Vec<(&str, &str, u32)> = members.iter().map(|(u, r, w)| (u.as_str(), *r, *w)).collect();
    let dir = format!("plugins_dir = {:?}", plugins.path().display().to_string());

    let refused = plugins.path().join("refused.toml");
    std::fs::write(&refused, balancer_config(&members, "", &dir)).unwrap();
    let (code, _, err) = fulcrum_cmd(&["check", "--config", refused.to_str().unwrap()], None);
    assert_eq!(code, 1);
    assert!(err.contains("byrequests.wasm is named `byrequests`, like the built-in plugin"), "{err}");

    let config = balancer_config(&members, "", &format!("{dir}\n\n[plugins.byrequests]\nshadow_builtin = true\n"));
    let fulcrum = Fulcrum::start(&config);
    let client = client();
    assert_eq!(counts(&client, &fulcrum).await, split(2, 2), "the file (a round robin) replaced the built-in");

    std::fs::remove_file(plugins.path().join("byrequests.wasm")).unwrap();
    logged(&fulcrum, "lbmethod plugin `byrequests` reloaded").await;
    assert_eq!(counts(&client, &fulcrum).await, split(1, 3), "the built-in is back");
}
