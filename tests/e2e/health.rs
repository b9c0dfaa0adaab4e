//! Active health checks (mod_proxy_hcheck) through the real binary: members taken out by their
//! checks and brought back, while requests flow.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::support::*;

const TEN_S: Duration = Duration::from_secs(10);

/// Wait (bounded) until the log has a line with every one of `parts`; how long it took.
async fn logged(fulcrum: &Fulcrum, parts: &[&str], within: Duration) -> Duration {
    let start = Instant::now();
    while !fulcrum.log().lines().any(|line| parts.iter().all(|p| line.contains(p))) {
        assert!(start.elapsed() < within, "{parts:?} not logged within {within:?}; log:\n{}", fulcrum.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

/// Requests sent in a loop until stopped: every status seen, and which member served each.
struct Load {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<(u16, String)>>,
}

impl Load {
    fn start(url: String) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let task = tokio::spawn(async move {
            let client = client();
            let mut seen = Vec::new();
            // Bounded even if the test forgets to stop it.
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stopped.load(Ordering::Relaxed) && Instant::now() < deadline {
                let answer = get(&client, &url, &[]).await;
                seen.push((answer.status.as_u16(), answer.served_by().to_string()));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            seen
        });
        Load { stop, task }
    }

    async fn finish(self) -> Vec<(u16, String)> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("load task")
    }
}

/// Must-show 1: a member that refuses connections is taken out by TCP checks within
/// hcinterval × hcfails (plus an interval), and comes back after hcpasses passes, while GETs flow
/// without a single client-visible error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_checks_take_a_refusing_member_out_and_bring_it_back() {
    let (web1, mut web2) = two_backends().await;
    let check = "hcmethod = \"TCP\"\nhcinterval = \"300ms\"\nhcfails = 2\nhcpasses = 2";
    let config = members_config(
        &[(&web1.url(), &format!("route = \"web1\"\n{check}")), (&web2.url(), &format!("route = \"web2\"\n{check}"))],
        "",
    );
    let fulcrum = Fulcrum::start(&config);
    let load = Load::start(fulcrum.url("/"));
    tokio::time::sleep(Duration::from_millis(300)).await;

    let web2_addr = web2.addr;
    web2.stop().await;
    let out =
        logged(&fulcrum, &[&format!("member={}", web2.url()), "out of rotation after 2 failure(s) in a row"], TEN_S)
            .await;
    // 2 failures 300 ms apart, one interval of slack, and room for a busy machine.
    assert!(out <= Duration::from_millis(300 * 2 + 300 + 700), "taken out after {out:?}");

    let web2 = EchoServer::start(web2_addr, "web2").await.expect("web2 again on its port");
    let back = logged(&fulcrum, &[&format!("member={}", web2.url()), "passed 2 time(s) in a row"], TEN_S).await;
    assert!(back <= Duration::from_millis(300 * 3 + 700), "back after {back:?}");
    // Back in rotation (its error state from the refused requests ended too): it serves again.
    let served_before = web2.served();
    let start = Instant::now();
    while web2.served() == served_before {
        assert!(start.elapsed() < Duration::from_secs(5), "web2 gets no requests after coming back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let seen = load.finish().await;
    let failed: Vec<_> = seen.iter().filter(|(status, _)| *status != 200).collect();
    assert!(failed.is_empty(), "client-visible errors: {failed:?} of {} requests", seen.len());
    assert!(seen.len() > 50, "only {} requests ran", seen.len());
    eprintln!(
        "TCP checks every 300 ms: out {out:?} after the member went away, back {back:?} after it returned; {} GETs meanwhile, 0 failed",
        seen.len()
    );
}

/// Must-show 2: a member that accepts connections but answers 500 on `hcuri` (or does not answer
/// at all) is taken out by HTTP checks and never chosen while out; a TCP check keeps it in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_checks_take_out_a_member_that_accepts_but_fails() {
    let (web1, web2) = two_backends().await;
    // A member that reads each request and never answers.
    let silent = raw_member(|stream, _head| async move {
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop(stream);
    })
    .await;
    let healthy = "hcmethod = \"GET\"\nhcuri = \"/health\"\nhcinterval = \"200ms\"";
    let failing = "hcmethod = \"GET\"\nhcuri = \"/status/500\"\nhcinterval = \"200ms\"";
    // The silent member gets requests only via its checks: it is a hot standby.
    let config = members_config(
        &[
            (&web1.url(), &format!("route = \"web1\"\n{healthy}")),
            (&web2.url(), &format!("route = \"web2\"\n{failing}")),
            (&format!("http://{silent}"), &format!("route = \"silent\"\nstatus = \"+H\"\n{healthy}")),
        ],
        "",
    );
    let fulcrum = Fulcrum::start(&config);
    let web2_member = format!("member={}", web2.url());
    logged(&fulcrum, &[&web2_member, "health check failed (GET /status/500): status 500"], TEN_S).await;
    let silent_member = format!("member=http://{silent}");
    logged(&fulcrum, &[&silent_member, "health check failed (GET /health): no answer within 200 ms"], TEN_S).await;

    let client = client();
    for _ in 0..20 {
        let answer = get(&client, &fulcrum.url("/"), &[]).await;
        assert_eq!((answer.status.as_u16(), answer.served_by()), (200, "web1"), "web2 is out");
    }
    assert!(!fulcrum.log().contains("back in rotation"), "no member came back: {}", fulcrum.log());

    // The same member under a TCP check: it accepts connections, so it stays in and serves.
    let tcp = members_config(
        &[
            (&web1.url(), "route = \"web1\"\nhcmethod = \"TCP\"\nhcinterval = \"200ms\""),
            (&web2.url(), "route = \"web2\"\nhcmethod = \"TCP\"\nhcuri = \"/status/500\"\nhcinterval = \"200ms\""),
        ],
        "",
    );
    let fulcrum = Fulcrum::start(&tcp);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let served: Vec<String> = {
        let mut served = Vec::new();
        for _ in 0..4 {
            served.push(get(&client, &fulcrum.url("/"), &[]).await.served_by().to_string());
        }
        served
    };
    assert_eq!(served, ["web1", "web2", "web1", "web2"]);
    assert!(!fulcrum.log().contains("health check failed"), "{}", fulcrum.log());
}

/// `fulcrum check` shows each member's check.
#[test]
fn check_prints_the_health_checks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hc.toml");
    let config = members_config(
        &[
            ("http://127.0.0.1:18001", "route = \"web1\"\nhctemplate = \"web\""),
            ("http://127.0.0.1:18002/app", "route = \"web2\"\nhcmethod = \"TCP\""),
        ],
        "",
    ) + "\n[hcexpr.up]\nstatus = [\"200-299\"]\n\n[hctemplate.web]\nhcmethod = \"GET\"\nhcuri = \"/health\"\nhcinterval = 5\nhcfails = 3\nhcexpr = \"up\"\n";
    std::fs::write(&path, config).unwrap();
    let (code, out, err) = fulcrum_cmd(&["check", "--config", path.to_str().unwrap()], None);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("    health check GET /health every 5s, out after 3 failure(s), back after 1 pass(es) hcexpr=up"),
        "{out}"
    );
    assert!(out.contains("    health check TCP every 30s, out after 1 failure(s), back after 1 pass(es)\n"), "{out}");
}

/// Must-show 5: members report their capacity in their health checks' answers (mod_heartmonitor's
/// `busy=N&ready=M`, in the body or a header), and the `heartbeat` lbmethod sends traffic in
/// proportion to it; a member that reports nothing is skipped while others report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_sends_traffic_in_proportion_to_reported_capacity() {
    heartbeat_follows_the_reports("heartbeat", "").await;
}

/// Three members behind `lbmethod` (a heartbeat build): one reports ready 30, one ready 10, one
/// nothing; 40 requests go 30 : 10 : 0. `top` is put before the config (a `plugins_dir`). Also
/// run by `compat.rs` with the heartbeat built for `fulcrum:plugin@0.3.0`.
pub(crate) async fn heartbeat_follows_the_reports(lbmethod: &str, top: &str) {
    use tokio::io::AsyncWriteExt;
    // Members that answer every request with their name, and their load report on /hc.
    async fn member(name: &'static str, report: &'static str) -> std::net::SocketAddr {
        raw_member(move |mut stream, head| async move {
            let head = String::from_utf8_lossy(&head).into_owned();
            let answer = if head.starts_with("GET /hc ") {
                format!("HTTP/1.0 200 OK\r\nX-Load: {report}\r\n\r\n{report}")
            } else {
                format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\nserved-by: {name}\n", name.len() + 12)
            };
            let _ = stream.write_all(answer.as_bytes()).await;
            // One request per connection: the test reads the name, Fulcrum closes after.
        })
        .await
    }
    let big = member("big", "busy=1&ready=30").await;
    let small = member("small", "busy=5&ready=10").await;
    let silent = member("silent", "nothing to report").await;
    let check =
        |load: &str| format!("hcmethod = \"GET\"\nhcuri = \"/hc\"\nhcinterval = \"200ms\"\nhcload = \"{load}\"");
    let config = members_config(
        &[
            (&format!("http://{big}"), &format!("route = \"big\"\n{}", check("body"))),
            (&format!("http://{small}"), &format!("route = \"small\"\n{}", check("header:X-Load"))),
            (&format!("http://{silent}"), &format!("route = \"silent\"\n{}", check("body"))),
        ],
        &format!("lbmethod = {lbmethod:?}"),
    );
    let fulcrum = Fulcrum::start(&format!("{top}{config}"));
    // Every member has been checked (and has reported, where it does).
    tokio::time::sleep(Duration::from_millis(600)).await;
    let client = client();
    let mut counts = std::collections::BTreeMap::new();
    for _ in 0..40 {
        let answer = get(&client, &fulcrum.url("/"), &[]).await;
        assert_eq!(answer.status, 200, "{}", fulcrum.log());
        *counts.entry(answer.served_by().to_string()).or_insert(0) += 1;
    }
    let expected: std::collections::BTreeMap<String, i32> = [("big".to_string(), 30), ("small".to_string(), 10)].into();
    assert_eq!(counts, expected, "ready 30 : 10, silent skipped");
}
