//! The access log: Apache's LogFormat, with the BALANCER_* variables as `%{VAR}e`.

use std::time::{Duration, Instant};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_logged_with_the_balancer_variables() {
    let (web1, web2) = two_backends().await;
    let config = balancer_config(
        &[(&web1.url(), "web1", 1), (&web2.url(), "web2", 1)],
        "stickysession = \"BALANCEID\"",
        "access_log = \"access.log\"\nlog_format = '%h \"%r\" %>s %{BALANCER_WORKER_ROUTE}e %{BALANCER_ROUTE_CHANGED}e %{Cookie}i'",
    );
    let fulcrum = Fulcrum::start(&config);
    let client = client();
    get(&client, &fulcrum.url("/a?x=1"), &[]).await;
    get(&client, &fulcrum.url("/b"), &[("cookie", "BALANCEID=x.web1")]).await;
    get(&client, &fulcrum.url("/c"), &[]).await;

    let expected = [
        "127.0.0.1 \"GET /a?x=1 HTTP/1.1\" 200 web1 1 -",
        "127.0.0.1 \"GET /b HTTP/1.1\" 200 web1 - BALANCEID=x.web1",
        "127.0.0.1 \"GET /c HTTP/1.1\" 200 web2 1 -",
    ];
    // The log is written by a background thread: wait (bounded) for the three lines.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut lines = Vec::new();
    while Instant::now() < deadline {
        lines = std::fs::read_to_string(fulcrum.file("access.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        if lines.len() >= expected.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(lines, expected);
}
