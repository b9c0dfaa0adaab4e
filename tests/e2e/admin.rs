//! The admin listener: `GET /metrics` in Prometheus text with plugin faults by kind, plugin
//! reloads, and the members' elected / busy / in-error columns; anything else a clear 404 or 405.

use fulcrum::plugin::builtin::TEST_PLUGIN_DIR;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_faults_and_members() {
    let (web1, web2) = two_backends().await;
    let admin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let admin_addr = admin.local_addr().unwrap();
    drop(admin);
    let config = balancer_config(
        &[(&web1.url(), "web1", 1), (&web2.url(), "web2", 1)],
        "lbmethod = \"fault-test\"",
        &format!("plugins_dir = {TEST_PLUGIN_DIR:?}\nadmin_listen = \"{admin_addr}\""),
    );
    let fulcrum = Fulcrum::start(&config);
    let client = client();
    // Client sends x-fault (or not): three good requests, two traps, one spin. Each fault replaces
    // the instance, and fault-test's round robin starts again at web1 in the new one.
    for fault in ["", "trap", "", "trap", "spin", ""] {
        let headers: Vec<(&str, &str)> = if fault.is_empty() { vec![] } else { vec![("x-fault", fault)] };
        get(&client, &fulcrum.url("/"), &headers).await;
    }
    let metrics = get(&client, &format!("http://{admin_addr}/metrics"), &[]).await;
    assert_eq!(metrics.status, 200, "{metrics:?}");
    assert!(metrics.headers["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    let has = |line: &str| assert!(metrics.body.lines().any(|l| l == line), "no `{line}` in:\n{}", metrics.body);
    has(r#"fulcrum_plugin_faults_total{plugin="fault-test",kind="trap"} 2"#);
    has(r#"fulcrum_plugin_faults_total{plugin="fault-test",kind="deadline"} 1"#);
    has(&format!(r#"fulcrum_member_elected_total{{balancer="default",member="{}"}} 3"#, web1.url()));
    has(&format!(r#"fulcrum_member_elected_total{{balancer="default",member="{}"}} 0"#, web2.url()));
    has(&format!(r#"fulcrum_member_busy{{balancer="default",member="{}"}} 0"#, web1.url()));
    has(&format!(r#"fulcrum_member_in_error{{balancer="default",member="{}"}} 0"#, web2.url()));

    // Anything but GET /metrics: a clear answer, not a proxied request.
    let other = get(&client, &format!("http://{admin_addr}/"), &[]).await;
    assert_eq!(other.status, 404);
    assert!(other.body.contains("GET /metrics"), "{}", other.body);
    assert_eq!(web1.served() + web2.served(), 3);
}
