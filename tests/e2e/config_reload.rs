//! Configuration reload (SIGHUP, `--watch-config`) through the real binary, while requests flow:
//! nothing fails, removed members get no new request, members that stay keep their state, and a
//! broken file changes nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::support::*;

/// How many times the log says the configuration was reloaded.
fn reloads(fulcrum: &Fulcrum) -> usize {
    fulcrum.log().matches("configuration reloaded from").count()
}

/// Wait (bounded) until the log has a line with every one of `parts`.
async fn logged(fulcrum: &Fulcrum, parts: &[&str]) {
    let start = Instant::now();
    while !fulcrum.log().lines().any(|line| parts.iter().all(|p| line.contains(p))) {
        assert!(start.elapsed() < Duration::from_secs(20), "{parts:?} not logged; log:\n{}", fulcrum.log());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Send SIGHUP and wait (bounded) until reload number `n` is logged.
async fn reload(fulcrum: &Fulcrum, n: usize) {
    fulcrum.signal("HUP");
    let start = Instant::now();
    while reloads(fulcrum) < n {
        assert!(start.elapsed() < Duration::from_secs(20), "reload {n} not logged; log:\n{}", fulcrum.log());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A config over `members` (backend, loadfactor), with a second vhost when `second_vhost`.
fn config(members: &[(&EchoServer, u32)], second_vhost: bool) -> String {
    let mut c = String::from(
        "listen = [\"127.0.0.1:0\"]\n\n[[vhost]]\nserver_name = \"www.example.com\"\n\
         proxy_pass = [{ path = \"/\", to = \"balancer://default/\" }]\n",
    );
    if second_vhost {
        c.push_str(
            "\n[[vhost]]\nserver_name = \"other.example.com\"\nproxy_pass = [{ path = \"/\", to = \"balancer://default/\" }]\n",
        );
    }
    c.push_str("\n[balancer.default]\n");
    for (backend, loadfactor) in members {
        c.push_str(&format!(
            "\n[[balancer.default.member]]\nurl = \"{}\"\nroute = \"{}\"\nloadfactor = {loadfactor}\n",
            backend.url(),
            backend.name
        ));
    }
    c
}

/// Must-show 3: 50 reloads under load — members added, removed and re-weighted, a vhost added and
/// removed — and not one request fails; once a reload is done, no request that starts after it
/// reaches a member it removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_reloads_under_load_fail_no_request() {
    let backends = [
        EchoServer::start("127.0.0.1:0".parse().unwrap(), "web1").await.unwrap(),
        EchoServer::start("127.0.0.1:0".parse().unwrap(), "web2").await.unwrap(),
        EchoServer::start("127.0.0.1:0".parse().unwrap(), "web3").await.unwrap(),
        EchoServer::start("127.0.0.1:0".parse().unwrap(), "web4").await.unwrap(),
    ];
    let [web1, web2, web3, web4] = &backends;
    // The configurations cycled through: (members, second vhost).
    let plans: Vec<(Vec<(&EchoServer, u32)>, bool)> = vec![
        (vec![(web1, 1), (web2, 1)], false),
        (vec![(web1, 1), (web2, 1), (web3, 1)], true),
        (vec![(web1, 3), (web3, 1)], true),
        (vec![(web3, 1), (web4, 2)], false),
        (vec![(web2, 1), (web4, 1)], true),
    ];
    let fulcrum = Fulcrum::start_with_log(&config(&plans[0].0, plans[0].1), "info");

    // Clients: each request has an id and a start time (ms since `epoch`); every answer is kept.
    let epoch = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let next_id = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, next_id, url) = (Arc::clone(&stop), Arc::clone(&next_id), fulcrum.url("/"));
        clients.push(tokio::spawn(async move {
            let client = client();
            let mut sent = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(120);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let id = next_id.fetch_add(1, Ordering::Relaxed).to_string();
                let started = epoch.elapsed();
                let answer = get(&client, &url, &[("x-request-id", &id)]).await;
                sent.push((id, started, answer.status.as_u16()));
            }
            sent
        }));
    }

    // Each reload's completion time and the members it removed.
    let mut removed_after: Vec<(Duration, Vec<&str>)> = Vec::new();
    for n in 1..=50 {
        let (members, vhost) = &plans[n % plans.len()];
        fulcrum.rewrite_config(&config(members, *vhost));
        reload(&fulcrum, n).await;
        let present: Vec<&str> = members.iter().map(|(b, _)| b.name.as_str()).collect();
        let absent = backends.iter().map(|b| b.name.as_str()).filter(|name| !present.contains(name)).collect();
        removed_after.push((epoch.elapsed(), absent));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut sent = Vec::new();
    for c in clients {
        sent.extend(c.await.expect("client"));
    }

    let failed: Vec<_> = sent.iter().filter(|(_, _, status)| *status != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        sent.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(sent.len() > 200, "only {} requests ran during the reloads", sent.len());
    // Where each request went, by id.
    let served: BTreeMap<String, &str> =
        backends.iter().flat_map(|b| b.request_ids().into_iter().map(move |id| (id, b.name.as_str()))).collect();
    let mut checked = 0;
    for (id, started, _) in &sent {
        // The last reload seen done before this request started. The next one may already be
        // in force too (it is asked for right after), so a member counts as removed for this
        // request when neither of the two has it.
        let Some(k) = removed_after.iter().rposition(|(done, _)| done < started) else { continue };
        let (done, absent) = &removed_after[k];
        let gone: Vec<&str> = match removed_after.get(k + 1) {
            Some((_, next)) => absent.iter().copied().filter(|m| next.contains(m)).collect(),
            None => absent.clone(),
        };
        let member = served.get(id).copied().unwrap_or("nobody");
        assert!(
            !gone.contains(&member),
            "request {id} started at {started:?}, after reload {} (done at {done:?}) removed {member}, and reached it; \
             reloads: {removed_after:?}",
            k + 1
        );
        checked += usize::from(!gone.is_empty());
    }
    assert!(checked > 100, "only {checked} requests started after a reload");
    eprintln!("50 reloads: {} requests, 0 failed; {checked} checked against the members removed", sent.len());
    assert!(!fulcrum.log().contains("refused"), "{}", fulcrum.log());
}

/// Must-show 3, continued: a member that stays keeps its byrequests counters (the order continues
/// where it was) and its error state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_that_stay_keep_their_counters_and_error_state() {
    let (web1, mut web2) = two_backends().await;
    let web3 = EchoServer::start("127.0.0.1:0".parse().unwrap(), "web3").await.unwrap();
    let fulcrum = Fulcrum::start(&config(&[(&web1, 1), (&web2, 1)], false));
    let client = client();
    let mut order = Vec::new();
    for _ in 0..3 {
        order.push(get(&client, &fulcrum.url("/"), &[]).await.served_by().to_string());
    }
    assert_eq!(order, ["web1", "web2", "web1"]);

    // web3 joins with lbstatus 0; web1 and web2 keep theirs (-100 and 100): byrequests goes on
    // with web2, then web3, then web1 — a fresh start would begin with web1.
    fulcrum.rewrite_config(&config(&[(&web1, 1), (&web2, 1), (&web3, 1)], false));
    reload(&fulcrum, 1).await;
    let mut order = Vec::new();
    for _ in 0..3 {
        order.push(get(&client, &fulcrum.url("/"), &[]).await.served_by().to_string());
    }
    assert_eq!(order, ["web2", "web3", "web1"], "the order continues where it was");

    // web2 refuses: a request fails over and puts it in error state (retry 60 s).
    let web2_addr = web2.addr;
    web2.stop().await;
    for _ in 0..3 {
        assert_eq!(get(&client, &fulcrum.url("/"), &[]).await.status, 200);
    }
    let web2 = EchoServer::start(web2_addr, "web2").await.unwrap();
    // A reload that re-weights web1: web2 stays, and so does its error state.
    fulcrum.rewrite_config(&config(&[(&web1, 2), (&web2, 1), (&web3, 1)], false));
    reload(&fulcrum, 2).await;
    for _ in 0..8 {
        let answer = get(&client, &fulcrum.url("/"), &[]).await;
        assert_ne!(answer.served_by(), "web2", "web2 is still in error state after the reload");
    }
    assert_eq!(web2.served(), 0);
}

/// Must-show 4: a reload with a broken file changes nothing and logs each problem with its
/// file:line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_file_changes_nothing() {
    let (web1, web2) = two_backends().await;
    let good = config(&[(&web1, 1), (&web2, 1)], false);
    let fulcrum = Fulcrum::start(&good);
    // Drops web2 (which would change routing) and has two mistakes.
    let broken = config(&[(&web1, 1)], false)
        .replace("loadfactor = 1", "loadfactor = 0")
        .replace("server_name = \"www.example.com\"", "server_name = \"www.example.com\"\nproxy_timeout_ms = 5");
    fulcrum.rewrite_config(&broken);
    fulcrum.signal("HUP");
    let file = fulcrum.file("fulcrum.toml").display().to_string();
    logged(
        &fulcrum,
        &["configuration reload refused", &format!("{file}:5:1: `vhost[0].proxy_timeout_ms`: unknown key")],
    )
    .await;
    logged(&fulcrum, &["configuration reload refused", &format!("{file}:13:14: "), "loadfactor must be 1 to 100"])
        .await;
    logged(&fulcrum, &["refused (2 problem(s)); keeping the configuration in force"]).await;
    assert_eq!(reloads(&fulcrum), 0);

    let client = client();
    let mut order = Vec::new();
    for _ in 0..4 {
        order.push(get(&client, &fulcrum.url("/"), &[]).await.served_by().to_string());
    }
    assert_eq!(order, ["web1", "web2", "web1", "web2"], "the configuration in force still balances over both");

    // Fixed, it applies.
    fulcrum.rewrite_config(&config(&[(&web1, 1)], false));
    reload(&fulcrum, 1).await;
    for _ in 0..3 {
        assert_eq!(get(&client, &fulcrum.url("/"), &[]).await.served_by(), "web1");
    }
    logged(&fulcrum, &["members kept 1, added 0, removed 1"]).await;
}

/// `run --watch-config`: saving the file reloads it, without a signal; what needs a restart says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_config_reloads_when_the_file_changes() {
    let (web1, web2) = two_backends().await;
    let fulcrum = Fulcrum::start_with_args(&config(&[(&web1, 1)], false), "info", &[], &["--watch-config"]);
    let client = client();
    assert_eq!(get(&client, &fulcrum.url("/"), &[]).await.served_by(), "web1");
    // web2 replaces web1; new `[limits]` wait for the next start.
    let next = config(&[(&web2, 1)], false) + "\n[limits]\nrequest_fields = 50\n";
    fulcrum.rewrite_config(&next);
    let start = Instant::now();
    while reloads(&fulcrum) < 1 {
        assert!(start.elapsed() < Duration::from_secs(20), "no reload after the file changed:\n{}", fulcrum.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..3 {
        assert_eq!(get(&client, &fulcrum.url("/"), &[]).await.served_by(), "web2");
    }
    assert!(fulcrum.log().contains("[limits] changed; that takes effect at the next start"), "{}", fulcrum.log());
}

/// A port nobody listens on now (taken from the system and let go).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Listeners follow the file: an address added is listened on once the reload is done, one
/// removed refuses new connections, and an address that cannot be bound refuses the reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_opens_and_closes_listeners() {
    let (web1, _web2) = two_backends().await;
    let fulcrum = Fulcrum::start(&config(&[(&web1, 1)], false));
    let first = fulcrum.addr;
    let port = free_port();
    let both = config(&[(&web1, 1)], false)
        .replace("listen = [\"127.0.0.1:0\"]", &format!("listen = [\"127.0.0.1:0\", \"127.0.0.1:{port}\"]"));
    fulcrum.rewrite_config(&both);
    reload(&fulcrum, 1).await;
    let client = client();
    let added = get(&client, &format!("http://127.0.0.1:{port}/"), &[]).await;
    assert_eq!((added.status.as_u16(), added.served_by()), (200, "web1"), "the new listener serves");
    assert_eq!(get(&client, &fulcrum.url("/"), &[]).await.status, 200, "the old one still does");

    // Only the new address: the first one stops taking connections.
    fulcrum.rewrite_config(&config(&[(&web1, 1)], false).replace("127.0.0.1:0", &format!("127.0.0.1:{port}")));
    reload(&fulcrum, 2).await;
    let refused = std::net::TcpStream::connect_timeout(&first, Duration::from_secs(2));
    assert!(refused.is_err(), "{first} still accepts after the reload removed it");
    assert_eq!(get(&client, &format!("http://127.0.0.1:{port}/"), &[]).await.status, 200);

    // An address in use elsewhere: the reload is refused, and nothing changes.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let clash =
        config(&[(&web1, 1)], false).replace("127.0.0.1:0", &format!("127.0.0.1:{port}\", \"127.0.0.1:{taken_port}"));
    fulcrum.rewrite_config(&clash);
    fulcrum.signal("HUP");
    logged(&fulcrum, &["configuration reload", "refused", &format!("cannot listen on 127.0.0.1:{taken_port}")]).await;
    assert_eq!(reloads(&fulcrum), 2);
    assert_eq!(get(&client, &format!("http://127.0.0.1:{port}/"), &[]).await.status, 200);
}
