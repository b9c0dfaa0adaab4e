//! A plugin that traps, runs forever, hoards memory, answers nonsense or calls WASI it was not
//! granted: the request that hit it gets a clear 5xx, the fault is logged with the plugin's name,
//! and the next request is served.

use fulcrum::plugin::builtin::{TEST_PLUGIN_DIR, TEST_PLUGINS_APART_DIR};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_faulty_plugin_costs_one_request_not_the_proxy() {
    let (web1, web2) = two_backends().await;
    let config = balancer_config(
        &[(&web1.url(), "web1", 1), (&web2.url(), "web2", 1)],
        "lbmethod = \"fault-test\"",
        &format!("plugins_dir = {TEST_PLUGIN_DIR:?}"),
    );
    let fulcrum = Fulcrum::start(&config);
    let client = client();

    // Client sends x-fault: X; client gets status; the log says why.
    let cases = [
        ("trap", 500, "plugin `fault-test` trapped"),
        ("spin", 500, "plugin `fault-test` ran past its deadline"),
        ("grow", 500, "plugin `fault-test` exceeded its memory limit"),
        (
            "bad-member",
            500,
            "plugin `fault-test` gave an invalid answer: member 4294967294 is not one of the candidates",
        ),
        ("decline", 503, "no usable member"),
        (
            "wasi",
            500,
            "plugin `fault-test` called a WASI function it was not granted: \
             `wasi:cli/environment@0.2.0#get-environment` (grant it in [plugins.fault-test] wasi = [...])",
        ),
        ("print", 500, "called a WASI function it was not granted: `wasi:cli/stdout@0.2.0#get-stdout`"),
    ];
    for (fault, status, logged) in cases {
        let answer = get(&client, &fulcrum.url("/"), &[("x-fault", fault)]).await;
        assert_eq!(answer.status.as_u16(), status, "x-fault: {fault}: {answer:?}");
        assert_eq!(answer.served_by(), "", "x-fault: {fault} reached a member");
        assert!(
            answer.body.contains(&format!("<title>{status} ")),
            "x-fault: {fault}: not an error page: {}",
            answer.body
        );

        // The very next request is served normally, by a fresh instance where the last one died.
        let next = get(&client, &fulcrum.url("/"), &[]).await;
        assert_eq!(next.status, 200, "after x-fault: {fault}: {next:?}");
        assert!(["web1", "web2"].contains(&next.served_by()));

        let log = fulcrum.log();
        assert!(log.contains(logged), "x-fault: {fault}: expected `{logged}` in the log:\n{log}");
    }
    // The not-granted call is logged with its Wasm backtrace, like any trap.
    assert!(fulcrum.log().contains("wasi = [...]); error while executing at wasm backtrace:"), "{}", fulcrum.log());
    // Nothing that faulted reached a member: only the good request after each fault did.
    assert_eq!(web1.served() + web2.served(), cases.len() as u64);
}

/// A plugin that runs until its deadline holds up only the requests that need its balancer. On a
/// proxy with two worker threads, two selectors spin (as many as there are workers; `spin-test`
/// imports no WASI, so it is called right on a worker) and two more requests wait for those
/// balancers' locks; meanwhile every request to a third balancer is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spinning_plugins_do_not_stall_the_proxy() {
    let (web1, web2) = two_backends().await;
    let mut config = format!(
        "listen = [\"127.0.0.1:0\"]\nplugins_dir = {TEST_PLUGIN_DIR:?}\n\n\
         [plugins.spin-test]\ncall_deadline_ms = 8000\n\n\
         [[vhost]]\nserver_name = \"www.example.com\"\nproxy_pass = [\n\
         {{ path = \"/one/\", to = \"balancer://one/\" }},\n\
         {{ path = \"/two/\", to = \"balancer://two/\" }},\n\
         {{ path = \"/\", to = \"balancer://steady/\" }},\n]\n"
    );
    for (balancer, lbmethod) in [("one", "spin-test"), ("two", "spin-test"), ("steady", "byrequests")] {
        config.push_str(&format!("\n[balancer.{balancer}]\nlbmethod = \"{lbmethod}\"\n"));
        for member in [&web1, &web2] {
            config.push_str(&format!("[[balancer.{balancer}.member]]\nurl = \"{}\"\n", member.url()));
        }
    }
    let fulcrum = Fulcrum::start_with_env(&config, "info", &[("TOKIO_WORKER_THREADS", "2")]);
    let client = client();
    let request = |path: &str, headers: &'static [(&'static str, &'static str)]| {
        let (client, url) = (client.clone(), fulcrum.url(path));
        tokio::spawn(async move { get(&client, &url, headers).await })
    };

    let spinning = [request("/one/", &[("x-fault", "spin")]), request("/two/", &[("x-fault", "spin")])];
    // Both calls are running: each logs a line before its loop.
    for _ in 0..3000 {
        if fulcrum.log().matches("spinning until the deadline").count() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(fulcrum.log().matches("spinning until the deadline").count(), 2, "{}", fulcrum.log());
    let waiting = [request("/one/", &[]), request("/two/", &[])];
    // Time for them to reach their balancers and wait for the locks (ordering only, nothing is timed).
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    for i in 0..20 {
        let answer = get(&client, &fulcrum.url("/"), &[]).await;
        assert_eq!(answer.status, 200, "request {i} to the steady balancer: {answer:?}");
    }
    assert!(
        spinning.iter().chain(&waiting).all(|call| !call.is_finished()),
        "the steady balancer's requests were served only after the spinning calls ended:\n{}",
        fulcrum.log()
    );
    for call in spinning {
        assert_eq!(call.await.unwrap().status, 500);
    }
    for call in waiting {
        let waited = call.await.unwrap();
        assert_eq!(waited.status, 200, "a request that waited for a spinning balancer: {waited:?}");
    }
    assert_eq!(fulcrum.log().matches("plugin `spin-test` ran past its deadline").count(), 2, "{}", fulcrum.log());
}

/// The same WASI call, granted: the plugin gets Fulcrum's empty environment and serves the request.
/// So does a granted blocking write to stdout (discarded), which wasmtime-wasi carries out on a
/// Tokio runtime: from a plugin called on the proxy's worker thread. A grant that does not exist is
/// a config error naming its line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_wasi_call_is_served() {
    let (web1, web2) = two_backends().await;
    let members = [(web1.url(), "web1", 1), (web2.url(), "web2", 1)];
    let members: Vec<(&str, &str, u32)> = members.iter().map(|(u, r, l)| (u.as_str(), *r, *l)).collect();
    let config = |grants: &str| {
        balancer_config(
            &members,
            "lbmethod = \"fault-test\"",
            &format!("plugins_dir = {TEST_PLUGIN_DIR:?}\n\n[plugins.fault-test]\nwasi = [{grants}]\n"),
        )
    };
    let fulcrum = Fulcrum::start(&config("\"cli\""));
    for fault in ["wasi", "print", "wasi", "print"] {
        let answer = get(&client(), &fulcrum.url("/"), &[("x-fault", fault)]).await;
        assert_eq!(answer.status, 200, "x-fault: {fault}: {answer:?}\n{}", fulcrum.log());
        assert_eq!(answer.served_by(), "web1", "x-fault: {fault}");
    }

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grants.toml");
    std::fs::write(&path, config("\"cli\", \"filesystem\"")).unwrap();
    let (code, out, err) = fulcrum_cmd(&["check", "--config", path.to_str().unwrap()], None);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("grants.toml:5:") && err.contains("`filesystem` is not a WASI grant (known: clocks, random, cli)"),
        "{err}"
    );
}

/// Per-plugin policy: `on_fault = "fallback"` lets the balancer's fallback built-in choose for the
/// request that hit the fault; `fault_status` changes what `fail` answers; the limits are the
/// plugin's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_policies_per_plugin() {
    let (web1, web2) = two_backends().await;
    let cases = [
        ("on_fault = \"fallback\"", "trap", "200"),
        ("on_fault = \"fallback\"\ncall_deadline_ms = 5", "spin", "200"),
        ("on_fault = \"fail\"\nfault_status = 503", "trap", "503"),
        ("memory_limit_mib = 2\nfault_status = 502", "grow", "502"),
    ];
    for (settings, fault, expected) in cases {
        let config = balancer_config(
            &[(&web1.url(), "web1", 1), (&web2.url(), "web2", 1)],
            "lbmethod = \"fault-test\"\nfallback = \"byrequests\"",
            &format!("plugins_dir = {TEST_PLUGIN_DIR:?}\n\n[plugins.fault-test]\n{settings}\n"),
        );
        let fulcrum = Fulcrum::start(&config);
        let client = client();
        let answer = get(&client, &fulcrum.url("/"), &[("x-fault", fault)]).await;
        assert_eq!(answer.status.as_str(), expected, "{settings} / x-fault: {fault}: {answer:?}");
        if expected == "200" {
            assert!(fulcrum.log().contains("choosing with `byrequests`"), "{}", fulcrum.log());
        }
        assert_eq!(get(&client, &fulcrum.url("/"), &[]).await.status, 200, "{settings}: the next request");
    }
}

/// `recycle_after_calls`: an instance is replaced after that many calls (for guest runtimes that
/// leak), so fault-test's per-instance round robin over three members starts again every two
/// requests and never reaches web3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_are_recycled_after_their_calls() {
    let (web1, web2) = two_backends().await;
    let web3 = EchoServer::start("127.0.0.1:0".parse().unwrap(), "web3").await.unwrap();
    let config = balancer_config(
        &[(&web1.url(), "web1", 1), (&web2.url(), "web2", 1), (&web3.url(), "web3", 1)],
        "lbmethod = \"fault-test\"",
        &format!("plugins_dir = {TEST_PLUGIN_DIR:?}\n\n[plugins.fault-test]\nrecycle_after_calls = 2\n"),
    );
    let fulcrum = Fulcrum::start(&config);
    let client = client();
    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push(get(&client, &fulcrum.url("/"), &[]).await.served_by().to_string());
    }
    assert_eq!(seen, ["web1", "web2", "web1", "web2", "web1", "web2"]);
}

/// A rules plugin's faults are told apart and counted as a selector's are (one call wrapper for
/// both): a rules call that overruns its deadline counts `kind="deadline"`, one that hits its
/// memory cap `kind="memory"`, a panic `kind="trap"`. The request goes on without the rules'
/// actions and is served; the log names the plugin, the request and the Wasm backtrace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_faults_are_counted_by_kind() {
    let (web1, web2) = two_backends().await;
    let plugins = tempfile::tempdir().unwrap();
    let plugin = "rules-fault-test.wasm";
    std::fs::copy(std::path::Path::new(TEST_PLUGINS_APART_DIR).join(plugin), plugins.path().join(plugin)).unwrap();
    let admin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let admin_addr = admin.local_addr().unwrap();
    drop(admin);
    let config = balancer_config(
        &[(&web1.url(), "web1", 1), (&web2.url(), "web2", 1)],
        "",
        &format!(
            "plugins_dir = {:?}\nadmin_listen = \"{admin_addr}\"\n\n\
             [plugins.rules-fault-test]\ncall_deadline_ms = 50\nmemory_limit_mib = 16\n",
            plugins.path().display().to_string()
        ),
    )
    .replacen("[balancer.default]", "[[vhost.rules]]\nplugin = \"rules-fault-test\"\n\n[balancer.default]", 1);
    let fulcrum = Fulcrum::start(&config);
    let client = client();

    let good = get(&client, &fulcrum.url("/"), &[]).await;
    assert_eq!(good.status, 200, "{good:?}");
    assert_eq!(good.headers.get("x-rules").map(|v| v.to_str().unwrap()), Some("ok"), "{good:?}");
    for fault in ["spin", "grow", "grow-small", "trap", "spin"] {
        let answer = get(&client, &fulcrum.url("/"), &[("x-rules-fault", fault)]).await;
        assert_eq!(answer.status, 200, "x-rules-fault: {fault}: {answer:?}\n{}", fulcrum.log());
        assert!(["web1", "web2"].contains(&answer.served_by()), "x-rules-fault: {fault}: {answer:?}");
    }

    let metrics = get(&client, &format!("http://{admin_addr}/metrics"), &[]).await;
    let has = |line: &str| assert!(metrics.body.lines().any(|l| l == line), "no `{line}` in:\n{}", metrics.body);
    has(r#"fulcrum_plugin_faults_total{plugin="rules-fault-test",kind="deadline"} 2"#);
    has(r#"fulcrum_plugin_faults_total{plugin="rules-fault-test",kind="memory"} 2"#);
    has(r#"fulcrum_plugin_faults_total{plugin="rules-fault-test",kind="trap"} 1"#);
    let log = fulcrum.log();
    for what in ["ran past its deadline", "exceeded its memory limit", "trapped"] {
        let start = log.find(&format!("rules plugin `rules-fault-test` failed: {what}: "));
        let start = start.unwrap_or_else(|| panic!("no `{what}` fault in the log:\n{log}"));
        // The entry runs until the next one (a line that starts with a timestamp).
        let entry = &log[start..];
        let entry = &entry[..entry.find("\n20").unwrap_or(entry.len())];
        assert!(entry.contains("wasm backtrace:") && entry.contains("request="), "{entry}");
    }
}
