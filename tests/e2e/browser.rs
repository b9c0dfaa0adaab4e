//! Must-show 1 of the balancer-manager: an operator in a real browser (Debian's Chromium,
//! headless, driven by Playwright: `tests/browser/manager.mjs`) disables web2 from the manager page
//! and enables it again; traffic shows each change. Screenshots of the page before and after
//! land in `target/browser/`.

use std::process::Command;

use crate::support::*;

/// Run the browser script: switch `member`'s Disabled flag `on` or `off`; the status it then shows.
fn operate(fulcrum: &Fulcrum, member: &str, disabled: &str) -> String {
    let root = repo_root();
    let shots = root.join("target/browser");
    std::fs::create_dir_all(&shots).unwrap();
    let out = Command::new("node")
        .arg(root.join("tests/browser/manager.mjs"))
        .args([&fulcrum.url(""), member, disabled, shots.to_str().unwrap()])
        // playwright-core, installed by tests/run under target/js-tools.
        .env("JS_TOOLS", root.join("target/js-tools"))
        .output()
        .expect("run node (tests/run installs Node.js' playwright-core and Debian's chromium)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "the browser script failed:\n{stdout}{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_disables_and_enables_a_member_in_the_browser() {
    let (web1, web2) = two_backends().await;
    let config = members_config(&[(&web1.url(), "route = \"web1\""), (&web2.url(), "route = \"web2\"")], "")
        .replace(
            "proxy_pass = [{ path = \"/\", to = \"balancer://default/\" }]",
            "proxy_pass = [{ path = \"/balancer-manager\", to = \"!\" }, { path = \"/\", to = \"balancer://default/\" }]\n\
             location = [{ path = \"/balancer-manager\", handler = \"balancer-manager\", require_ip = [\"127.0.0.1\"] }]",
        );
    let fulcrum = Fulcrum::start(&config);
    let client = client();
    let mut served = Vec::new();
    for _ in 0..2 {
        served.push(get(&client, &fulcrum.url("/"), &[]).await.served_by().to_string());
    }
    assert_eq!(served, ["web1", "web2"]);

    let shown = operate(&fulcrum, &web2.url(), "on");
    assert!(shown.contains("Init Dis"), "the page shows web2 disabled: {shown}");
    for _ in 0..4 {
        assert_eq!(get(&client, &fulcrum.url("/"), &[]).await.served_by(), "web1", "web2 is disabled");
    }

    let shown = operate(&fulcrum, &web2.url(), "off");
    assert!(shown.contains("Init Ok"), "the page shows web2 back: {shown}");
    let mut served = Vec::new();
    for _ in 0..4 {
        served.push(get(&client, &fulcrum.url("/"), &[]).await.served_by().to_string());
    }
    // web2 comes back with its counters as they were (both at 0 here): web1 first, then web2.
    assert_eq!(served, ["web1", "web2", "web1", "web2"], "alternation as before (§9.7)");
    for shot in ["manager-before-on.png", "manager-after-on.png", "manager-after-off.png"] {
        assert!(repo_root().join("target/browser").join(shot).is_file(), "{shot}");
    }
}
