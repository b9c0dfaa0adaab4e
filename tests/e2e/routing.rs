//! Routing: proxy_pass exclusions on segment boundaries (docs/apache-behaviour.md §9.1), proxy_pass_match
//! (§8), ProxyPassReverse (§7.2).

use crate::support::*;

fn config(web1: &EchoServer, web2: &EchoServer) -> String {
    format!(
        r#"listen = ["127.0.0.1:0"]

[[vhost]]
server_name = "www.example.com"
proxy_pass = [
    {{ path = "/server-status", to = "!" }},
    {{ path = "/", to = "balancer://default/" }},
]
proxy_pass_reverse = [{{ path = "/", to = "balancer://default/" }}]
proxy_pass_match = [{{ regex = "(^/script.php)", to = "{web1}/$1", timeout = 305, connectiontimeout = 305 }}]

[balancer.default]
stickysession = "BALANCEID"

[[balancer.default.member]]
url = "{web1}"
route = "web1"

[[balancer.default.member]]
url = "{web2}"
route = "web2"
"#,
        web1 = web1.url(),
        web2 = web2.url()
    )
}

/// Client asks for a path; 404 (not proxied) or the request line the member saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusions_and_proxy_pass_match() {
    let (web1, web2) = two_backends().await;
    let fulcrum = Fulcrum::start(&config(&web1, &web2));
    let client = client();
    let cases = [
        ("/server-status", None),
        ("/server-status/", None),
        ("/server-status/x", None),
        ("/server-statusx", Some("GET /server-statusx HTTP/1.1")),
        ("/script.php", Some("GET //script.php HTTP/1.1")),
        ("/script.php/extra/path", Some("GET //script.php HTTP/1.1")),
        ("/script.phpfoo", Some("GET //script.php HTTP/1.1")),
        ("/script.php?a=1&b=2", Some("GET //script.php?a=1&b=2 HTTP/1.1")),
        ("/scriptXphp", Some("GET //scriptXphp HTTP/1.1")),
        ("/dir/script.php", Some("GET /dir/script.php HTTP/1.1")),
    ];
    for (path, seen) in cases {
        let answer = get(&client, &fulcrum.url(path), &[]).await;
        match seen {
            None => assert_eq!(answer.status, 404, "{path}: {answer:?}"),
            Some(line) => {
                assert_eq!(answer.status, 200, "{path}");
                assert!(answer.body.contains(&format!("request: {line}\n")), "{path}: {}", answer.body);
            }
        }
    }
    // proxy_pass_match always goes to its own worker (web1) and sets no BALANCER_* variables.
    for _ in 0..3 {
        assert_eq!(get(&client, &fulcrum.url("/script.php"), &[]).await.served_by(), "web1");
    }
}

/// The member redirects to itself; the client sees this server's URL. Foreign and relative
/// Locations are untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_pass_reverse_rewrites_member_locations() {
    let (web1, web2) = two_backends().await;
    let fulcrum = Fulcrum::start(&config(&web1, &web2));
    let client = client();
    let host = fulcrum.addr.to_string();
    let web1_port = web1.addr.port();
    let cases = [
        ("SELF/redirected", &*host, format!("http://{host}/redirected")),
        ("SELF/redirected", "www.example.com", "http://www.example.com/redirected".to_string()),
        ("SELF/redirected", "www.example.com:8080", "http://www.example.com:8080/redirected".to_string()),
        ("SELF", "www.example.com", "http://www.example.com/".to_string()),
        ("http://elsewhere.test/x", "www.example.com", "http://elsewhere.test/x".to_string()),
        ("/relative", "www.example.com", "/relative".to_string()),
        (&*format!("http://127.0.0.1:{web1_port}0/x"), "www.example.com", format!("http://127.0.0.1:{web1_port}0/x")),
    ];
    for (location, host_header, expected) in cases {
        // Pin the member that answers, so SELF names it.
        let answer = get(
            &client,
            &fulcrum.url(&format!("/location?{location}")),
            &[("host", host_header), ("cookie", "BALANCEID=x.web1")],
        )
        .await;
        assert_eq!(answer.status, 302, "{location}");
        assert_eq!(answer.headers["location"], expected.as_str(), "Location {location} with Host {host_header}");
    }
}

/// ServerName and ServerAlias pick the virtual host (case-insensitive, port ignored); an unknown
/// Host gets the first one, as Apache's default vhost for the address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtual_hosts_by_server_name_and_alias() {
    let (web1, web2) = two_backends().await;
    let config = format!(
        r#"listen = ["127.0.0.1:0"]

[[vhost]]
server_name = "one.example"
proxy_pass = [{{ path = "/", to = "balancer://one/" }}]

[[vhost]]
server_name = "two.example"
server_alias = ["deux.example", "zwei.example"]
proxy_pass = [{{ path = "/", to = "balancer://two/" }}]

[balancer.one]
[[balancer.one.member]]
url = "{}"

[balancer.two]
[[balancer.two.member]]
url = "{}"
"#,
        web1.url(),
        web2.url()
    );
    let fulcrum = Fulcrum::start(&config);
    let client = client();
    let cases = [
        ("one.example", "web1"),
        ("two.example", "web2"),
        ("DEUX.example:8080", "web2"),
        ("zwei.example", "web2"),
        ("unknown.example", "web1"),
    ];
    for (host, member) in cases {
        let answer = get(&client, &fulcrum.url("/"), &[("host", host)]).await;
        assert_eq!(answer.served_by(), member, "Host: {host}");
    }
}

/// A `proxy_pass_match` template that puts a space in the target: the client gets 400 and the
/// member is sent nothing (a request line is never written with bytes that would break it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_is_not_a_request_target_is_refused_unsent() {
    let (web1, _web2) = two_backends().await;
    let config = format!(
        "listen = [\"127.0.0.1:0\"]\n\n[[vhost]]\nserver_name = \"www.example.com\"\n\
         proxy_pass_match = [{{ regex = \"^/(.*)$\", to = \"{}/a b/$1\" }}]\n",
        web1.url()
    );
    let fulcrum = Fulcrum::start(&config);
    let answer = get(&client(), &fulcrum.url("/x"), &[]).await;
    assert_eq!(answer.status, 400, "{answer:?}");
    assert_eq!(web1.served(), 0);
    assert_eq!(web1.connections(), 0, "not even a connection: the target is refused before");
}
