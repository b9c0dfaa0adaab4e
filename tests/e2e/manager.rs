//! The guide's local handlers through the real binary: `/server-status` and `/balancer-manager`
//! (docs/apache-behaviour.md §9), their access rule, Apache's cross-site protection of changes,
//! the effects of a change on routing, and escaping.

use std::net::SocketAddr;

use crate::support::*;

/// The guide's vhost with both handlers, allowed to `allow`, over `members` (url, member lines).
fn handlers_config(members: &[(&str, &str)], allow: &str) -> String {
    let mut c = format!(
        "listen = [\"127.0.0.1:0\"]\n\n[[vhost]]\nserver_name = \"www.example.com\"\nproxy_pass = [\n\
         {{ path = \"/balancer-manager\", to = \"!\" }},\n{{ path = \"/server-status\", to = \"!\" }},\n\
         {{ path = \"/\", to = \"balancer://default/\" }},\n]\n\n\
         [[vhost.location]]\npath = \"/balancer-manager\"\nhandler = \"balancer-manager\"\nrequire_ip = [{allow}]\n\n\
         [[vhost.location]]\npath = \"/server-status\"\nhandler = \"server-status\"\nrequire_ip = [{allow}]\n\n\
         [balancer.default]\nstickysession = \"BALANCEID\"\n"
    );
    for (url, lines) in members {
        c.push_str(&format!("\n[[balancer.default.member]]\nurl = \"{url}\"\n{lines}\n"));
    }
    c
}

fn get_page(addr: SocketAddr, target: &str, referer: Option<&str>) -> (u16, String, String) {
    let referer = referer.map_or(String::new(), |r| format!("Referer: {r}\r\n"));
    raw_exchange(
        addr,
        &format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n{referer}Connection: close\r\n\r\n", addr.port()),
    )
}

fn post(addr: SocketAddr, form: &str, referer: Option<&str>) -> (u16, String, String) {
    let referer = referer.map_or(String::new(), |r| format!("Referer: {r}\r\n"));
    raw_exchange(
        addr,
        &format!(
            "POST /balancer-manager HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n{referer}Content-Type: \
             application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
            addr.port(),
            form.len()
        ),
    )
}

/// The balancer's nonce, read from the manager page's links.
fn nonce(page: &str) -> String {
    let at = page.find("nonce=").expect("a nonce in the page") + "nonce=".len();
    page[at..at + 36].to_string()
}

fn enc(text: &str) -> String {
    text.replace(':', "%3A").replace('/', "%2F")
}

async fn routes(fulcrum: &Fulcrum, n: usize, headers: &[(&str, &str)]) -> Vec<String> {
    let client = client();
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(get(&client, &fulcrum.url("/"), headers).await.served_by().to_string());
    }
    out
}

/// §9.1–9.4: the handlers answer on their paths (segment boundaries), the rest is proxied;
/// server-status in HTML and `?auto` with Apache's member lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_status_shows_the_members() {
    let (web1, web2) = two_backends().await;
    let config =
        handlers_config(&[(&web1.url(), "route = \"web1\""), (&web2.url(), "route = \"web2\"")], "\"127.0.0.1\"");
    let fulcrum = Fulcrum::start(&config);
    assert_eq!(routes(&fulcrum, 3, &[]).await, ["web1", "web2", "web1"]);
    let (status, head, body) = get_page(fulcrum.addr, "/server-status?auto", None);
    assert_eq!(status, 200, "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: text/plain; charset=iso-8859-1"), "{head}");
    let lines = [
        "ProxyBalancer[0]Name: balancer://default".to_string(),
        format!("ProxyBalancer[0]Worker[0]Name: {}", web1.url()),
        "ProxyBalancer[0]Worker[0]Status: Init Ok \n".to_string(),
        "ProxyBalancer[0]Worker[0]Elected: 2\n".to_string(),
        "ProxyBalancer[0]Worker[1]Elected: 1\n".to_string(),
        "ProxyBalancer[0]Worker[1]Busy: 0\n".to_string(),
        "ProxyBalancer[0]Worker[1]Sent: 0K\n".to_string(),
        "Total Accesses: 3\n".to_string(),
    ];
    for line in &lines {
        assert!(body.contains(line.as_str()), "`{line}` not in:\n{body}");
    }
    let (status, _, html) = get_page(fulcrum.addr, "/server-status/", None);
    assert_eq!(status, 200);
    assert!(html.contains("<h1>Proxy LoadBalancer Status for balancer://default</h1>"), "{html}");
    assert!(html.contains("<td>Init Ok </td><td>web1</td>"), "{html}");
    // Not on a segment boundary: proxied.
    let (status, _, proxied) = get_page(fulcrum.addr, "/server-statusx", None);
    assert_eq!(status, 200);
    assert!(proxied.contains("served-by: web"), "{proxied}");
}

/// §9.2: from an address the rule does not allow, 403 with Apache's page, nothing changes, and
/// every other path is still proxied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_outside_require_ip_gets_403_and_changes_nothing() {
    let (web1, web2) = two_backends().await;
    let config = handlers_config(
        &[(&web1.url(), "route = \"web1\""), (&web2.url(), "route = \"web2\"")],
        "\"10.9.9.9\", \"::2\"",
    );
    let fulcrum = Fulcrum::start(&config);
    for target in ["/balancer-manager", "/server-status", "/server-status?auto"] {
        let (status, _, body) = get_page(fulcrum.addr, target, None);
        assert_eq!(status, 403, "{target}");
        assert!(body.contains("<title>403 Forbidden</title>"), "{body}");
        assert!(body.contains("You don't have permission to access this resource."), "{body}");
    }
    let form = format!("b=default&w={}&nonce=x&w_status_D=1", enc(&web1.url()));
    let (status, _, _) = post(fulcrum.addr, &form, Some("http://127.0.0.1/balancer-manager"));
    assert_eq!(status, 403);
    assert_eq!(routes(&fulcrum, 4, &[]).await, ["web1", "web2", "web1", "web2"], "web1 is still in");
}

/// Must-show 2 and §9.6: a change is honoured only as a POST with the nonce and a same-host
/// Referer; every forged variant gets the page and changes nothing, as traffic shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_changes_change_nothing() {
    let (web1, web2) = two_backends().await;
    let config =
        handlers_config(&[(&web1.url(), "route = \"web1\""), (&web2.url(), "route = \"web2\"")], "\"127.0.0.1\"");
    let fulcrum = Fulcrum::start(&config);
    let (_, _, page) = get_page(fulcrum.addr, "/balancer-manager", None);
    let nonce = nonce(&page);
    let w = enc(&web1.url());
    let good = format!("b=default&w={w}&nonce={nonce}&w_status_D=1");
    let same_host = "http://127.0.0.1/balancer-manager";
    /// What is forged, and how it is sent.
    type Forged<'a> = (&'a str, Box<dyn Fn() -> (u16, String, String) + 'a>);
    let forged: Vec<Forged> = vec![
        (
            "a GET with the parameters",
            Box::new(|| get_page(fulcrum.addr, &format!("/balancer-manager?{good}"), Some(same_host))),
        ),
        ("a POST without Referer", Box::new(|| post(fulcrum.addr, &good, None))),
        (
            "a POST with another host's Referer",
            Box::new(|| post(fulcrum.addr, &good, Some("http://evil.example/balancer-manager"))),
        ),
        (
            "a POST with a wrong nonce",
            Box::new(|| {
                post(fulcrum.addr, &good.replace(&nonce, "00000000-0000-4000-8000-000000000000"), Some(same_host))
            }),
        ),
        (
            "a POST without a nonce",
            Box::new(|| post(fulcrum.addr, &format!("b=default&w={w}&w_status_D=1"), Some(same_host))),
        ),
    ];
    for (what, send) in &forged {
        let (status, _, body) = send();
        assert_eq!(status, 200, "{what}: Apache answers the page");
        assert!(body.contains("Init Ok "), "{what}: web1 still shown usable:\n{body}");
        assert_eq!(
            routes(&fulcrum, 2, &[]).await.iter().filter(|r| *r == "web1").count(),
            1,
            "{what}: web1 still serves"
        );
    }
    assert!(fulcrum.log().contains("ignoring parameters"), "{}", fulcrum.log());
    // The real thing works.
    let (status, _, body) = post(fulcrum.addr, &good, Some(same_host));
    assert_eq!(status, 200);
    assert!(body.contains("Init Dis "), "{body}");
    assert_eq!(routes(&fulcrum, 4, &[]).await, ["web2", "web2", "web2", "web2"]);
}

/// §9.7: disabling web1 sends everything to web2, a web1 session is re-routed with a new cookie;
/// re-enabling brings it back at once and restarts the alternation with web1. Factor changes
/// apply as well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_and_enabling_a_member_as_apache_does() {
    let (web1, web2) = two_backends().await;
    let config =
        handlers_config(&[(&web1.url(), "route = \"web1\""), (&web2.url(), "route = \"web2\"")], "\"127.0.0.1\"");
    let fulcrum = Fulcrum::start(&config);
    assert_eq!(routes(&fulcrum, 3, &[]).await, ["web1", "web2", "web1"]);
    let (_, _, page) = get_page(fulcrum.addr, "/balancer-manager", None);
    let nonce = nonce(&page);
    let same_host = "http://127.0.0.1/balancer-manager";
    let w = enc(&web1.url());
    // The edit form, as a browser following the link gets it.
    let (_, _, form) =
        get_page(fulcrum.addr, &format!("/balancer-manager?b=default&w={w}&nonce={nonce}"), Some(same_host));
    assert!(form.contains("<h3>Edit worker settings for ") && form.contains("name='w_status_D'"), "{form}");
    let (_, _, no_form) = get_page(fulcrum.addr, &format!("/balancer-manager?b=default&w={w}&nonce={nonce}"), None);
    assert!(!no_form.contains("Edit worker settings"), "without Referer only the overview");

    post(fulcrum.addr, &format!("b=default&w={w}&nonce={nonce}&w_status_D=1"), Some(same_host));
    assert_eq!(routes(&fulcrum, 3, &[]).await, ["web2", "web2", "web2"]);
    let client = client();
    let sticky = get(&client, &fulcrum.url("/"), &[("cookie", "BALANCEID=balancer.web1")]).await;
    assert_eq!(sticky.served_by(), "web2");

    post(fulcrum.addr, &format!("b=default&w={w}&nonce={nonce}&w_status_D=0"), Some(same_host));
    // Back with its counters as they were (Apache 2.4 does not reset lbstatus): web1 -100, web2 100.
    assert_eq!(routes(&fulcrum, 4, &[]).await, ["web2", "web1", "web2", "web1"]);

    // Factor 2 for web2 (a rebuild of the balancer, keeping the members' counters).
    let w2 = enc(&web2.url());
    let (_, _, page) = post(fulcrum.addr, &format!("b=default&w={w2}&nonce={nonce}&w_lf=2"), Some(same_host));
    assert!(page.contains("<td>2.00</td>"), "{page}");
    let order = routes(&fulcrum, 6, &[]).await;
    assert_eq!(order.iter().filter(|r| *r == "web2").count(), 4, "{order:?}");
    let (_, _, xml) =
        get_page(fulcrum.addr, &format!("/balancer-manager?b=default&xml=1&nonce={nonce}"), Some(same_host));
    assert!(xml.contains("<httpd:loadfactor>2.00</httpd:loadfactor>"), "{xml}");
}

/// Must-show 4: a route with markup and a member URL with quotes render inert in both pages and
/// in the XML.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_render_inert() {
    let (web1, web2) = two_backends().await;
    let quoted = format!("{}/a'b", web2.url());
    let config = handlers_config(
        &[
            (&web1.url(), "route = \"<script>alert(1)</script>\""),
            (&quoted, "route = \"x'><img src=x onerror=alert(2)>\""),
        ],
        "\"127.0.0.1\"",
    );
    let fulcrum = Fulcrum::start(&config);
    let (_, _, page) = get_page(fulcrum.addr, "/balancer-manager", None);
    let nonce = nonce(&page);
    let same_host = "http://127.0.0.1/balancer-manager";
    let pages = [
        page,
        get_page(fulcrum.addr, "/server-status", None).2,
        get_page(fulcrum.addr, &format!("/balancer-manager?b=default&xml=1&nonce={nonce}"), Some(same_host)).2,
        get_page(
            fulcrum.addr,
            &format!("/balancer-manager?b=default&w={}&nonce={nonce}", enc(&quoted)),
            Some(same_host),
        )
        .2,
        get_page(fulcrum.addr, "/server-status?auto", None).2,
    ];
    for (i, p) in pages.iter().enumerate() {
        assert!(!p.contains("<script>") && !p.contains("<img"), "page {i} has live markup:\n{p}");
    }
    assert!(pages[0].contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{}", pages[0]);
    assert!(pages[3].contains("a&#39;b"), "the quote is escaped in the form's values:\n{}", pages[3]);
}

/// Must-show 5: the JSON API disables and re-enables a member with the token, and refuses
/// without it (or with another), changing nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_api_changes_members_with_the_token_only() {
    let (web1, web2) = two_backends().await;
    let token = "s3cret-token-for-tests";
    let config =
        handlers_config(&[(&web1.url(), "route = \"web1\""), (&web2.url(), "route = \"web2\"")], "\"127.0.0.1\"")
            .replacen(
                "handler = \"balancer-manager\"\n",
                &format!("handler = \"balancer-manager\"\napi_token = \"{token}\"\n"),
                1,
            );
    let fulcrum = Fulcrum::start(&config);
    let api = |method: &str, auth: Option<&str>, body: &str| {
        let auth = auth.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        raw_exchange(
            fulcrum.addr,
            &format!(
                "{method} /balancer-manager/api HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
        )
    };
    let disable = format!("{{\"balancer\": \"default\", \"member\": \"{}\", \"disabled\": true}}", web1.url());
    for (auth, expected) in [(None, 401), (Some("wrong-token-wrong-token"), 401)] {
        let (status, head, _) = api("POST", auth, &disable);
        assert_eq!(status, expected, "{head}");
        assert_eq!(routes(&fulcrum, 2, &[]).await, ["web1", "web2"], "nothing changed ({auth:?})");
    }
    let (status, _, state) = api("GET", Some(token), "");
    assert_eq!(status, 200);
    let state: serde_json::Value = serde_json::from_str(state.trim()).expect("JSON");
    assert_eq!(state["balancers"][0]["members"][0]["status"], "Init Ok");

    let (status, _, after) = api("POST", Some(token), &disable);
    assert_eq!(status, 200, "{after}");
    let after: serde_json::Value = serde_json::from_str(after.trim()).expect("JSON");
    assert_eq!(after["balancers"][0]["members"][0]["status"], "Init Dis");
    assert_eq!(routes(&fulcrum, 3, &[]).await, ["web2", "web2", "web2"]);

    let enable = disable.replace("true", "false");
    assert_eq!(api("POST", Some(token), &enable).0, 200);
    assert_eq!(routes(&fulcrum, 2, &[]).await, ["web1", "web2"], "back");
    let (status, _, why) = api("POST", Some(token), "{\"balancer\": \"default\", \"member\": \"nope\"}");
    assert_eq!(status, 400);
    assert!(why.contains("no member nope"), "{why}");
}

/// `persist = true` (Apache's BalancerPersist): the manager's changes survive a restart; a
/// balancer without it starts from its file again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persisting_balancers_keep_manager_changes_across_restarts() {
    let (web1, web2) = two_backends().await;
    let config =
        handlers_config(&[(&web1.url(), "route = \"web1\""), (&web2.url(), "route = \"web2\"")], "\"127.0.0.1\"")
            .replace("[balancer.default]\n", "[balancer.default]\npersist = true\n");
    let fulcrum = Fulcrum::start(&config);
    let (_, _, page) = get_page(fulcrum.addr, "/balancer-manager", None);
    let nonce = nonce(&page);
    let same_host = "http://127.0.0.1/balancer-manager";
    post(fulcrum.addr, &format!("b=default&w={}&nonce={nonce}&w_status_D=1", enc(&web2.url())), Some(same_host));
    post(fulcrum.addr, &format!("b=default&w={}&nonce={nonce}&w_lf=3", enc(&web1.url())), Some(same_host));
    let state = std::fs::read_to_string(fulcrum.file("fulcrum.state.json")).expect("the state file");
    assert!(state.contains("\"status\": \"D\"") && state.contains("\"loadfactor\": 3"), "{state}");

    let fulcrum = fulcrum.restart();
    assert_eq!(routes(&fulcrum, 3, &[]).await, ["web1", "web1", "web1"], "web2 is still disabled");
    let (_, _, page) = get_page(fulcrum.addr, "/balancer-manager", None);
    assert!(page.contains("Init Dis ") && page.contains("<td>3.00</td>"), "{page}");
    assert!(fulcrum.log().contains("balancer-manager changes restored"), "{}", fulcrum.log());
    assert_ne!(nonce, self::nonce(&page), "a new nonce at every start");
}

/// The balancer form: a member added (with the confirmation box, as Apache wants) takes traffic
/// at once; an lbmethod among the loaded ones can be chosen, and an unknown one is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_balancer_form_adds_a_member_and_changes_the_lbmethod() {
    let (web1, web2) = two_backends().await;
    let config = handlers_config(&[(&web1.url(), "route = \"web1\"")], "\"127.0.0.1\"");
    let fulcrum = Fulcrum::start(&config);
    let (_, _, page) = get_page(fulcrum.addr, "/balancer-manager", None);
    let nonce = nonce(&page);
    let same_host = "http://127.0.0.1/balancer-manager";
    let (_, _, form) = get_page(fulcrum.addr, &format!("/balancer-manager?b=default&nonce={nonce}"), Some(same_host));
    assert!(
        form.contains("<option value='heartbeat'>") && form.contains("<option value='byrequests' selected>"),
        "{form}"
    );

    // Without the confirmation nothing is added.
    post(fulcrum.addr, &format!("b=default&nonce={nonce}&b_nwrkr={}", enc(&web2.url())), Some(same_host));
    assert_eq!(routes(&fulcrum, 2, &[]).await, ["web1", "web1"]);
    let (_, _, page) =
        post(fulcrum.addr, &format!("b=default&nonce={nonce}&b_nwrkr={}&b_wyes=1", enc(&web2.url())), Some(same_host));
    assert!(page.contains(&format!(">{}</a>", web2.url())), "{page}");
    let served = routes(&fulcrum, 4, &[]).await;
    assert_eq!(served.iter().filter(|r| *r == "web2").count(), 2, "{served:?}");

    let (_, _, page) = post(fulcrum.addr, &format!("b=default&nonce={nonce}&b_lbm=bytraffic"), Some(same_host));
    assert!(page.contains("<td>bytraffic</td>"), "{page}");
    let (_, _, page) = post(fulcrum.addr, &format!("b=default&nonce={nonce}&b_lbm=no-such-method"), Some(same_host));
    assert!(page.contains("Not changed:") && page.contains("<td>bytraffic</td>"), "{page}");
}
