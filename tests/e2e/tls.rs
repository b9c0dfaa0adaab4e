//! TLS termination (issue 13, must-show 1): the guide's set-up over TLS with curl (HTTP/2 and
//! HTTP/1.1) answers exactly as over plain HTTP; each virtual host's certificate by SNI; old TLS
//! versions and plain HTTP refused on the TLS port; certificates re-read on reload; bad files are
//! `fulcrum check` errors naming them. Certificates are made by the test (rcgen).

use std::process::Command;
use std::sync::Arc;

use crate::certs::{TestCa, presented_subject};
use crate::support::*;

/// The guide's configuration (`examples/apache-guide.toml`) with its members replaced by test
/// backends and `listen` replaced by `listen`.
pub fn guide_with_listen(web1: &EchoServer, web2: &EchoServer, listen: &str) -> String {
    std::fs::read_to_string(repo_root().join("examples/apache-guide.toml"))
        .unwrap()
        .replace("listen = [\"127.0.0.1:8080\"]", &format!("listen = {listen}"))
        .replace("http://127.0.0.1:18001", &web1.url())
        .replace("http://127.0.0.1:18002", &web2.url())
}

/// A TLS `listen` entry on port 0 with the certificate `name` of `ca`'s folder.
pub fn tls_entry(ca: &TestCa, name: &str) -> String {
    let (cert, key) = (ca.dir.join(format!("{name}.pem")), ca.dir.join(format!("{name}.key")));
    format!(
        "{{ address = \"127.0.0.1:0\", tls_certificate = \"{}\", tls_key = \"{}\" }}",
        cert.display(),
        key.display()
    )
}

/// What curl got: the HTTP version of the status line, the status, the headers, the body.
#[derive(Debug)]
pub struct Curl {
    pub version: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Curl {
    pub fn values(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    }

    pub fn served_by(&self) -> &str {
        self.body.lines().find_map(|l| l.strip_prefix("served-by: ")).unwrap_or("")
    }

    /// A request header as the echo backend saw it.
    pub fn seen(&self, name: &str) -> Option<&str> {
        self.body.lines().find_map(|l| l.strip_prefix(&format!("header: {name}: ")))
    }
}

/// Run curl with `args` (plus `-si`); panics with curl's stderr when it fails.
pub fn curl(args: &[&str]) -> Curl {
    let out = Command::new("curl").args(["-si", "--max-time", "20"]).args(args).output().expect("run curl");
    assert!(out.status.success(), "curl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (mut head, mut body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    // With -L, the last response's head (the ones before are the redirects').
    while body.starts_with("HTTP/") {
        (head, body) = body.split_once("\r\n\r\n").unwrap_or((body, ""));
    }
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.split(' ');
    let version = parts.next().unwrap_or_default().to_string();
    let status = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Curl { version, status, headers, body: body.to_string() }
}

/// curl's failure (exit code and stderr) for `args`, which must fail.
fn curl_fails(args: &[&str]) -> (i32, String) {
    let out = Command::new("curl").args(["-s", "-S", "--max-time", "20"]).args(args).output().expect("run curl");
    assert!(!out.status.success(), "curl {args:?} succeeded: {}", String::from_utf8_lossy(&out.stdout));
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// `https://www.example.com:PORT` resolved to the listener `url` (`https://127.0.0.1:PORT`).
fn named(url: &str, name: &str) -> (String, String) {
    let port = url.rsplit(':').next().unwrap();
    (format!("https://{name}:{port}"), format!("{name}:{port}:127.0.0.1"))
}

/// One answer as the guide's rules shape it: who served it, Set-Cookie, X-Balance, and the
/// X-Forwarded-For the member saw.
type Seen = (String, Vec<String>, Vec<String>, Option<String>);

/// The guide's sticky walk (docs/apache-behaviour.md §4.1–4.3) with curl `args` against `base`.
fn sticky_walk(base: &str, args: &[&str]) -> Vec<Seen> {
    let cookies = [None, None, Some("BALANCEID=balancer.web2"), Some("BALANCEID=balancer.web9"), None];
    cookies
        .iter()
        .map(|cookie| {
            let mut all: Vec<&str> = args.to_vec();
            if let Some(c) = cookie {
                all.push("--cookie");
                all.push(c);
            }
            let url = format!("{base}/");
            all.push(&url);
            let answer = curl(&all);
            assert_eq!(answer.status, 200, "{answer:?}");
            let expected_version = if args.contains(&"--http2") { "HTTP/2" } else { "HTTP/1.1" };
            assert_eq!(answer.version, expected_version, "{args:?}");
            let owned = |v: Vec<&str>| v.into_iter().map(str::to_string).collect::<Vec<_>>();
            (
                answer.served_by().to_string(),
                owned(answer.values("set-cookie")),
                owned(answer.values("x-balance")),
                answer.seen("x-forwarded-for").map(str::to_string),
            )
        })
        .collect()
}

/// Must-show 1: curl over TLS 1.3, with `--http2` and with `--http1.1`, gets the same balanced
/// answers, cookies and X-Balance headers as over plain HTTP, with examples/apache-guide.toml's
/// rules (each walk on a fresh Fulcrum, so that byrequests starts at web1 each time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_curl_http2_and_http11_answer_as_plain_http() {
    let (web1, web2) = two_backends().await;
    let certs = tempfile::tempdir().unwrap();
    let ca = TestCa::new(certs.path());
    ca.issue("www.example.com", "www");
    let ca_file = ca.ca_file().display().to_string();
    let listen = format!("[\"127.0.0.1:0\", {}]", tls_entry(&ca, "www"));
    let config = guide_with_listen(&web1, &web2, &listen);

    let walk = |tls: Option<&[&str]>| {
        let fulcrum = Fulcrum::start(&config);
        let urls = fulcrum.listeners(2);
        assert!(urls[0].starts_with("http://") && urls[1].starts_with("https://"), "{urls:?}");
        match tls {
            None => sticky_walk(&urls[0], &["-H", "Host: www.example.com"]),
            Some(extra) => {
                let (base, resolve) = named(&urls[1], "www.example.com");
                let mut args = vec!["--cacert", &ca_file, "--resolve", &resolve, "--tlsv1.3", "--tls-max", "1.3"];
                args.extend_from_slice(extra);
                sticky_walk(&base, &args)
            }
        }
    };
    let plain = walk(None);
    let expected: Vec<Seen> = [
        (
            "web1",
            vec!["BALANCEID=balancer.web1; path=/;"],
            vec!["BALANCER_ROUTE_CHANGED=1", "BALANCER_WORKER_ROUTE=web1"],
        ),
        (
            "web2",
            vec!["BALANCEID=balancer.web2; path=/;"],
            vec!["BALANCER_ROUTE_CHANGED=1", "BALANCER_WORKER_ROUTE=web2"],
        ),
        ("web2", vec![], vec!["BALANCER_WORKER_ROUTE=web2", "BALANCER_SESSION_ROUTE=web2"]),
        (
            "web1",
            vec!["BALANCEID=balancer.web1; path=/;"],
            vec!["BALANCER_ROUTE_CHANGED=1", "BALANCER_WORKER_ROUTE=web1", "BALANCER_SESSION_ROUTE=web9"],
        ),
        // The sticky request charged web2 (byrequests' lbstatus, as Apache): web1 again.
        (
            "web1",
            vec!["BALANCEID=balancer.web1; path=/;"],
            vec!["BALANCER_ROUTE_CHANGED=1", "BALANCER_WORKER_ROUTE=web1"],
        ),
    ]
    .into_iter()
    .map(|(by, cookies, balance)| {
        let strings = |v: Vec<&str>| v.into_iter().map(str::to_string).collect();
        (by.to_string(), strings(cookies), strings(balance), Some("127.0.0.1, 127.0.0.1".to_string()))
    })
    .collect();
    assert_eq!(plain, expected, "plain HTTP");
    assert_eq!(walk(Some(&["--http2"])), plain, "TLS 1.3, HTTP/2");
    assert_eq!(walk(Some(&["--http1.1"])), plain, "TLS 1.3, HTTP/1.1");
}

/// The guide's config with a second virtual host that has a certificate of its own.
fn two_vhosts(web1: &EchoServer, web2: &EchoServer, ca: &TestCa) -> String {
    let listen = format!("[{}]", tls_entry(ca, "www"));
    let mut config = guide_with_listen(web1, web2, &listen);
    let api = format!(
        "\n[[vhost]]\nserver_name = \"api.example.com\"\nserver_alias = [\"api2.example.com\"]\n\
         tls_certificate = \"{}\"\ntls_key = \"{}\"\nproxy_pass = [{{ path = \"/\", to = \"balancer://default/\" }}]\n\
         [[vhost.rules]]\ndirectives = 'RequestHeader set X-Vhost api'\n",
        ca.dir.join("api.pem").display(),
        ca.dir.join("api.key").display()
    );
    // Before the balancer tables: a [[vhost]] array of tables continues after the first one.
    let at = config.find("# <Proxy balancer://default>").unwrap();
    config.insert_str(at, &api);
    config
}

/// Must-show 1: two virtual hosts on one TLS listener present their own certificates by SNI (an
/// alias too); no SNI or an unknown name gets the listener's; and curl, verifying each against
/// the test CA, reaches each virtual host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_sni_presents_each_vhosts_certificate() {
    let (web1, web2) = two_backends().await;
    let certs = tempfile::tempdir().unwrap();
    let ca = TestCa::new(certs.path());
    let www = ca.issue("www.example.com", "www");
    let api = ca.issue("api.example.com", "api");
    let fulcrum = Fulcrum::start(&two_vhosts(&web1, &web2, &ca));
    let url = fulcrum.listeners(1).remove(0);
    let addr = url.trim_start_matches("https://").to_string();
    // (SNI sent, certificate presented)
    let rows: &[(Option<&str>, &str)] = &[
        (Some("www.example.com"), "CN = www.example.com"),
        (Some("api.example.com"), "CN = api.example.com"),
        (Some("API.Example.COM"), "CN = api.example.com"),
        (Some("api2.example.com"), "CN = api.example.com"),
        (Some("other.example.com"), "CN = www.example.com"),
        (None, "CN = www.example.com"),
    ];
    for (sni, subject) in rows {
        assert_eq!(presented_subject(&addr, *sni), *subject, "SNI {sni:?}");
    }
    // The very certificates configured, checked against the CA by a rustls client.
    assert_eq!(presented_der(&addr, &ca, "www.example.com").await, www.der);
    assert_eq!(presented_der(&addr, &ca, "api.example.com").await, api.der);
    let ca_file = ca.ca_file().display().to_string();
    for (name, vhost) in [("www.example.com", None), ("api.example.com", Some("api"))] {
        let (base, resolve) = named(&url, name);
        let answer = curl(&["--cacert", &ca_file, "--resolve", &resolve, "--http2", &format!("{base}/")]);
        assert_eq!(answer.status, 200);
        assert_eq!(answer.seen("x-vhost"), vhost, "{name}: {answer:?}");
    }
}

/// The DER of the certificate `addr` presents for SNI `name`, verified against `ca`.
pub async fn presented_der(addr: &str, ca: &TestCa, name: &str) -> Vec<u8> {
    let tls = tls_connect(addr, ca, name, &[b"http/1.1"]).await;
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// A TLS connection to `addr` for `name`, trusting `ca` only, offering `alpn`.
pub async fn tls_connect(
    addr: &str,
    ca: &TestCa,
    name: &str,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from_pem_file(ca.ca_file()).unwrap()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.expect("TLS handshake")
}

/// GET `target` (origin form) with `headers` over a new HTTP/1.1 TLS connection to `addr` for SNI
/// `name`, trusting `ca` only; the answer read whole.
pub async fn https_get(addr: &str, ca: &TestCa, name: &str, target: &str, headers: &[(&str, &str)]) -> Answer {
    use http_body_util::Empty;
    let tls = tls_connect(addr, ca, name, &[b"http/1.1"]).await;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await.expect("HTTP/1.1 over TLS");
    tokio::spawn(connection);
    let mut request = hyper::Request::get(target);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        sender.send_request(request.body(Empty::<bytes::Bytes>::new()).unwrap()),
    )
    .await
    .expect("no answer within 30 s")
    .expect("request failed");
    read_answer(response).await
}

/// Must-show 1: TLS 1.0 and 1.1 are refused by the server (the client is told to allow them, so
/// the refusal is Fulcrum's: a `protocol version` alert), and so is plain HTTP on the TLS port;
/// TLS 1.2 and 1.3 on the same port work (the same commands can pass).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_refuses_tls10_tls11_and_plain_http() {
    let (web1, web2) = two_backends().await;
    let certs = tempfile::tempdir().unwrap();
    let ca = TestCa::new(certs.path());
    ca.issue("www.example.com", "www");
    let fulcrum = Fulcrum::start(&guide_with_listen(&web1, &web2, &format!("[{}]", tls_entry(&ca, "www"))));
    let url = fulcrum.listeners(1).remove(0);
    let (base, resolve) = named(&url, "www.example.com");
    let ca_file = ca.ca_file().display().to_string();
    let target = format!("{base}/");
    let common = ["--cacert", ca_file.as_str(), "--resolve", resolve.as_str()];
    // (curl's version options, accepted?)
    let rows: &[(&[&str], bool)] = &[
        (&["--tlsv1.0", "--tls-max", "1.0", "--ciphers", "DEFAULT@SECLEVEL=0"], false),
        (&["--tlsv1.1", "--tls-max", "1.1", "--ciphers", "DEFAULT@SECLEVEL=0"], false),
        (&["--tlsv1.0", "--tls-max", "1.1", "--ciphers", "DEFAULT@SECLEVEL=0"], false),
        (&["--tlsv1.2", "--tls-max", "1.2"], true),
        (&["--tlsv1.3", "--tls-max", "1.3"], true),
    ];
    for (versions, accepted) in rows {
        let mut args: Vec<&str> = common.to_vec();
        args.extend_from_slice(versions);
        args.push(&target);
        if *accepted {
            assert_eq!(curl(&args).status, 200, "{versions:?}");
        } else {
            let (code, stderr) = curl_fails(&args);
            // 35: the TLS handshake failed, by an alert from the server (a refusal of the
            // client's own says "no protocols available" and has no alert).
            assert_eq!(code, 35, "{versions:?}: {stderr}");
            assert!(stderr.contains("alert"), "{versions:?}: {stderr}");
        }
    }
    // openssl's own view of the same: TLS 1.1 refused with an alert from the server.
    let addr = url.trim_start_matches("https://");
    let out = Command::new("openssl")
        .args(["s_client", "-connect", addr, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success() && text.contains("alert"), "{text}");
    // Plain HTTP on the TLS port: no HTTP answer, the connection is closed.
    let sock = addr.parse().unwrap();
    let (status, head, _) = raw_exchange(sock, "GET / HTTP/1.1\r\nHost: www.example.com\r\nConnection: close\r\n\r\n");
    assert_eq!(status, 0, "an HTTP answer on the TLS port: {head}");
    assert!(!head.contains("HTTP/"), "{head}");
    // What comes back, if anything, is a TLS alert record (content type 21), then the close.
    assert!(head.is_empty() || head.as_bytes()[0] == 0x15, "{:?}", head.as_bytes());
    // curl reads those bytes as no HTTP at all.
    let (_, stderr) = curl_fails(&[&format!("http://{addr}/")]);
    assert!(!stderr.contains("200"), "{stderr}");
    assert_eq!(web1.served() + web2.served(), 2, "only the two accepted requests reached a member");
}

/// Over TLS, members see `X-Forwarded-Proto: https` (the client's own value replaced) and the
/// rules see mod_ssl's variables; over plain HTTP neither (the client's header passes as Apache
/// passes it, and the variables are `(null)`, as httpd without mod_ssl prints them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_members_see_forwarded_proto_and_rules_see_mod_ssl_variables() {
    let (web1, web2) = two_backends().await;
    let certs = tempfile::tempdir().unwrap();
    let ca = TestCa::new(certs.path());
    ca.issue("www.example.com", "www");
    let listen = format!("[\"127.0.0.1:0\", {}]", tls_entry(&ca, "www"));
    let config = guide_with_listen(&web1, &web2, &listen).replace(
        "SetEnvIf X-Forwarded-For",
        "RequestHeader set X-TLS \"%{HTTPS}s %{SSL_PROTOCOL}s %{SSL_CIPHER}s %{SSL_TLS_SNI}s\"\n\
         RequestHeader set X-Is-TLS yes env=HTTPS\n\
         <If \"%{HTTPS} == 'on' && %{SSL_PROTOCOL} =~ /^TLSv1\\.[23]$/\">\nRequestHeader set X-If-TLS yes\n</If>\n\
         <Else>\nRequestHeader set X-If-TLS no\n</Else>\nSetEnvIf X-Forwarded-For",
    );
    let fulcrum = Fulcrum::start(&config);
    let urls = fulcrum.listeners(2);
    let ca_file = ca.ca_file().display().to_string();
    let (base, resolve) = named(&urls[1], "www.example.com");
    let tls = ["--cacert", ca_file.as_str(), "--resolve", resolve.as_str()];
    let plain_url = format!("{}/", urls[0]);
    let tls_url = format!("{base}/");
    // (curl arguments, X-Forwarded-Proto the member sees, X-TLS the member sees)
    let rows: Vec<(Vec<&str>, Option<&str>, &str)> = vec![
        (vec![plain_url.as_str()], None, "(null) (null) (null) (null)"),
        (vec!["-H", "X-Forwarded-Proto: https", plain_url.as_str()], Some("https"), "(null) (null) (null) (null)"),
        (
            [&tls[..], &["--tlsv1.3", "--http2", tls_url.as_str()]].concat(),
            Some("https"),
            "on TLSv1.3 TLS_AES_256_GCM_SHA384 www.example.com",
        ),
        (
            [&tls[..], &["--tlsv1.3", "--http1.1", "-H", "X-Forwarded-Proto: http", tls_url.as_str()]].concat(),
            Some("https"),
            "on TLSv1.3 TLS_AES_256_GCM_SHA384 www.example.com",
        ),
        (
            [&tls[..], &["--tls-max", "1.2", "--ciphers", "ECDHE-ECDSA-AES128-GCM-SHA256", tls_url.as_str()]].concat(),
            Some("https"),
            "on TLSv1.2 ECDHE-ECDSA-AES128-GCM-SHA256 www.example.com",
        ),
    ];
    for (args, proto, variables) in rows {
        let answer = curl(&args);
        assert_eq!(answer.status, 200, "{args:?}");
        assert_eq!(answer.seen("x-forwarded-proto"), proto, "{args:?}: {}", answer.body);
        assert_eq!(answer.seen("x-tls"), Some(variables), "{args:?}");
        // mod_ssl sets HTTPS for every request over TLS: `env=HTTPS` conditions see it.
        assert_eq!(answer.seen("x-is-tls"), variables.starts_with("on").then_some("yes"), "{args:?}");
        // And `<If>` expressions read them as httpd's ap_expr does (`%{HTTPS}` is `off` without TLS).
        let by_if = if variables.starts_with("on") { "yes" } else { "no" };
        assert_eq!(answer.seen("x-if-tls"), Some(by_if), "{args:?}");
    }
    // ProxyPassReverse builds the client's URL with the scheme it came over.
    let redirect = format!("{}/location?SELF/redirected", urls[0]);
    let answer = curl(&["-H", "Host: www.example.com", &redirect]);
    assert_eq!((answer.status, answer.values("location")), (302, vec!["http://www.example.com/redirected"]));
    let redirect = format!("{base}/location?SELF/redirected");
    for version in ["--http2", "--http1.1"] {
        let answer = curl(&[&tls[..], &[version, redirect.as_str()]].concat());
        let expected = format!("{base}/redirected");
        assert_eq!((answer.status, answer.values("location")), (302, vec![expected.as_str()]), "{version}");
    }
    // The balancer-manager's forms post back over TLS too.
    let referer = format!("{base}/balancer-manager");
    let overview = curl(&[&tls[..], &[referer.as_str()]].concat());
    let at = overview.body.find("nonce=").expect("the overview links carry the nonce") + "nonce=".len();
    let nonce = &overview.body[at..at + 36];
    let manager = format!("{base}/balancer-manager?b=default&nonce={nonce}&w=http://127.0.0.1:{}", web1.addr.port());
    let page = curl(&[&tls[..], &["--referer", referer.as_str(), manager.as_str()]].concat());
    assert_eq!(page.status, 200);
    assert!(page.body.contains(&format!("action=\"{base}/balancer-manager\"")), "{}", page.body);
}

/// Certificates are read again on reload (SIGHUP): new connections get the new one, and a
/// keep-alive connection opened before goes on serving requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_certificates_reread_on_reload_open_connections_keep_going() {
    use http_body_util::{BodyExt, Empty};
    let (web1, web2) = two_backends().await;
    let certs = tempfile::tempdir().unwrap();
    let ca = TestCa::new(certs.path());
    let first = ca.issue("www.example.com", "www");
    let config = guide_with_listen(&web1, &web2, &format!("[{}]", tls_entry(&ca, "www")));
    let fulcrum = Fulcrum::start(&config);
    let addr = fulcrum.listeners(1).remove(0).trim_start_matches("https://").to_string();
    assert_eq!(presented_der(&addr, &ca, "www.example.com").await, first.der);

    let tls = tls_connect(&addr, &ca, "www.example.com", &[b"http/1.1"]).await;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await.unwrap();
    tokio::spawn(connection);
    let request =
        || hyper::Request::get("/").header("host", "www.example.com").body(Empty::<bytes::Bytes>::new()).unwrap();
    let response = sender.send_request(request()).await.unwrap();
    assert_eq!(response.status(), 200);
    response.into_body().collect().await.unwrap();

    let second = ca.issue("www.example.com", "www");
    assert_ne!(first.der, second.der);
    fulcrum.signal("HUP");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !fulcrum.log().contains("configuration reloaded") {
        assert!(std::time::Instant::now() < deadline, "no reload: {}", fulcrum.log());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(presented_der(&addr, &ca, "www.example.com").await, second.der, "new connections");
    // The connection opened before the reload still serves requests.
    for _ in 0..2 {
        sender.ready().await.expect("the open connection goes on");
        let response = sender.send_request(request()).await.expect("the open connection goes on");
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert!(String::from_utf8_lossy(&body).contains("served-by: web"));
    }

    // A reload with a broken key is refused and the certificate in force stays.
    std::fs::write(ca.dir.join("www.key"), "not a key\n").unwrap();
    fulcrum.signal("HUP");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !fulcrum.log().contains("configuration reload refused") {
        assert!(std::time::Instant::now() < deadline, "no refusal: {}", fulcrum.log());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(fulcrum.log().contains("www.key"), "the refusal names the file: {}", fulcrum.log());
    assert_eq!(presented_der(&addr, &ca, "www.example.com").await, second.der);
}

/// A missing or bad certificate or key is a `fulcrum check` error that names the file and the
/// config key (and so a start-up error): never a panic.
#[test]
fn tls_bad_certificates_are_check_errors() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path());
    ca.issue("www.example.com", "www");
    ca.issue("api.example.com", "api");
    std::fs::write(dir.path().join("junk.pem"), "junk\n").unwrap();
    let d = dir.path().display();
    let vhost =
        "[[vhost]]\nserver_name = \"www.example.com\"\nproxy_pass = [{ path = \"/\", to = \"balancer://b/\" }]\n";
    let balancer = "[balancer.b]\n[[balancer.b.member]]\nurl = \"http://127.0.0.1:9\"\n";
    // (listen entry, vhost lines, what the error says)
    let rows: &[(String, &str, &[&str])] = &[
        (
            format!(
                "{{ address = \"127.0.0.1:0\", tls_certificate = \"{d}/missing.pem\", tls_key = \"{d}/www.key\" }}"
            ),
            "",
            &["`listen[0].tls_certificate`", "missing.pem", "cannot read"],
        ),
        (
            format!("{{ address = \"127.0.0.1:0\", tls_certificate = \"{d}/junk.pem\", tls_key = \"{d}/www.key\" }}"),
            "",
            &["`listen[0].tls_certificate`", "junk.pem", "no certificate"],
        ),
        (
            format!("{{ address = \"127.0.0.1:0\", tls_certificate = \"{d}/www.pem\", tls_key = \"{d}/api.key\" }}"),
            "",
            &["`listen[0].tls_key`", "api.key", "not the key of the certificate", "www.pem"],
        ),
        (
            format!("{{ address = \"127.0.0.1:0\", tls_certificate = \"{d}/www.pem\" }}"),
            "",
            &["`listen[0].tls_key`", "needs tls_key"],
        ),
        (
            format!(
                "{{ address = \"127.0.0.1:0\", tls_certificate = \"{d}/www.pem\", tls_key = \"{d}/www.key\", h2c = true }}"
            ),
            "",
            &["`listen[0].h2c`", "TLS listener"],
        ),
        (
            format!("{{ address = \"127.0.0.1:0\", tls_certificate = \"{d}/www.pem\", tls_key = \"{d}/www.key\" }}"),
            &format!("tls_certificate = \"{d}/api.pem\"\ntls_key = \"{d}/junk.pem\"\n"),
            &["`vhost[0].tls_key`", "junk.pem", "no private key"],
        ),
        (
            "\"127.0.0.1:0\"".to_string(),
            &format!("tls_certificate = \"{d}/api.pem\"\ntls_key = \"{d}/api.key\"\n"),
            &["`vhost[0].tls_certificate`", "no TLS listener"],
        ),
        ("{ adress = \"127.0.0.1:0\" }".to_string(), "", &["missing field `address`"]),
        ("42".to_string(), "", &["`listen[0]`", "an address like"]),
    ];
    for (entry, vhost_lines, words) in rows {
        let config = format!("listen = [{entry}]\n{vhost}{vhost_lines}\n{balancer}");
        let path = dir.path().join("fulcrum.toml");
        std::fs::write(&path, &config).unwrap();
        let (code, stdout, stderr) = fulcrum_cmd(&["check", "--config", path.to_str().unwrap()], None);
        assert_ne!(code, 0, "{config}\n{stdout}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        for word in *words {
            assert!(stderr.contains(word), "`{word}` not in:\n{stderr}\nfor:\n{config}");
        }
    }
    // `run` refuses to start on the same mistakes, with the same words.
    let config = format!(
        "listen = [{{ address = \"127.0.0.1:0\", tls_certificate = \"{d}/www.pem\", tls_key = \"{d}/api.key\" }}]\n\
         {vhost}\n{balancer}"
    );
    let path = dir.path().join("fulcrum.toml");
    std::fs::write(&path, &config).unwrap();
    let (code, _, stderr) = fulcrum_cmd(&["run", "--config", path.to_str().unwrap()], None);
    assert_ne!(code, 0);
    assert!(stderr.contains("`listen[0].tls_key`") && stderr.contains("api.key"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // And the good one passes, saying what each listener speaks.
    let config = format!(
        "listen = [\"127.0.0.1:0\", {{ address = \"127.0.0.1:0\", h2c = true }}, {{ address = \"127.0.0.1:0\", \
         tls_certificate = \"www.pem\", tls_key = \"www.key\" }}]\n{vhost}\n{balancer}"
    );
    let path = dir.path().join("fulcrum.toml");
    std::fs::write(&path, &config).unwrap();
    let (code, stdout, stderr) = fulcrum_cmd(&["check", "--config", path.to_str().unwrap()], None);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("listen 127.0.0.1:0 (http/1.1, h2c)"), "{stdout}");
    assert!(stdout.contains("listen 127.0.0.1:0 tls (h2, http/1.1) certificate"), "{stdout}");
}

/// examples/tls.toml: without its certificate files `fulcrum check` names the missing ones; with
/// them (made as its header says, here by rcgen) it passes.
#[test]
fn tls_example_config_checks() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tls.toml");
    std::fs::copy(repo_root().join("examples/tls.toml"), &config).unwrap();
    let args = ["check", "--config", config.to_str().unwrap()];
    let (code, _, stderr) = fulcrum_cmd(&args, None);
    assert_ne!(code, 0);
    for words in ["`listen[1].tls_certificate`", "certs/www.pem", "`vhost[1].tls_certificate`", "certs/api.pem"] {
        assert!(stderr.contains(words), "`{words}` not in {stderr}");
    }
    std::fs::create_dir(dir.path().join("certs")).unwrap();
    let ca = TestCa::new(&dir.path().join("certs"));
    ca.issue("www.example.com", "www");
    ca.issue("api.example.com", "api");
    let (code, stdout, stderr) = fulcrum_cmd(&args, None);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("listen 127.0.0.1:8443 tls (h2, http/1.1) certificate"), "{stdout}");
    assert!(stdout.contains("listen 127.0.0.1:8081 (http/1.1, h2c)"), "{stdout}");
    assert!(stdout.contains("listen 127.0.0.1:8000 redirect https://www.example.com:8443"), "{stdout}");
    assert!(stdout.contains("  tls certificate"), "{stdout}");
}

/// The redirect listener (Apache's `Redirect permanent / https://…` in a port-80 virtual host):
/// every request gets a 301 to the configured URL with its path and query, and nothing reaches a
/// member; curl `-L` follows it to the TLS listener and is served there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_redirect_listener_sends_clients_to_https() {
    let (web1, web2) = two_backends().await;
    let certs = tempfile::tempdir().unwrap();
    let ca = TestCa::new(certs.path());
    ca.issue("www.example.com", "www");
    // The TLS listener's port is known once it listens: the redirect gets it by a reload.
    let config = |port: u16| {
        let listen = format!(
            "[{{ address = \"127.0.0.1:0\", redirect = \"https://www.example.com:{port}/\" }}, {}]",
            tls_entry(&ca, "www")
        );
        guide_with_listen(&web1, &web2, &listen)
    };
    let fulcrum = Fulcrum::start(&config(1));
    let urls = fulcrum.listeners(2);
    let port: u16 = urls[1].rsplit(':').next().unwrap().parse().unwrap();
    fulcrum.rewrite_config(&config(port));
    fulcrum.signal("HUP");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !fulcrum.log().contains("configuration reloaded") {
        assert!(std::time::Instant::now() < deadline, "no reload: {}", fulcrum.log());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let ca_file = ca.ca_file().display().to_string();
    // (path and query sent, Location)
    let rows = [
        ("/", format!("https://www.example.com:{port}/")),
        ("/a/b?c=d&e", format!("https://www.example.com:{port}/a/b?c=d&e")),
        ("/balancer-manager", format!("https://www.example.com:{port}/balancer-manager")),
    ];
    for (path, location) in &rows {
        let answer = curl(&["-H", "Host: www.example.com", &format!("{}{path}", urls[0])]);
        assert_eq!(answer.status, 301, "{path}");
        assert_eq!(answer.values("location"), [location.as_str()], "{path}");
        assert!(answer.body.contains("<title>301 Moved Permanently</title>"), "{}", answer.body);
        assert!(answer.body.contains(&format!("<a href=\"{}\">here</a>", location.replace('&', "&amp;"))));
    }
    assert_eq!(web1.served() + web2.served(), 0, "a redirect reaches no member");
    let resolve = format!("www.example.com:{port}:127.0.0.1");
    let start = format!("http://www.example.com:{}/hello", urls[0].rsplit(':').next().unwrap());
    let resolve_plain = format!("www.example.com:{}:127.0.0.1", urls[0].rsplit(':').next().unwrap());
    let answer =
        curl(&["-L", "--cacert", &ca_file, "--resolve", &resolve, "--resolve", &resolve_plain, "--http2", &start]);
    assert_eq!((answer.status, answer.version.as_str()), (200, "HTTP/2"), "{answer:?}");
    assert!(answer.body.contains("request: GET /hello HTTP/1.1"), "{}", answer.body);
    assert_eq!(answer.seen("x-forwarded-proto"), Some("https"));

    // A redirect that is not an http(s) URL with a host, or with TLS or h2c, is a config error.
    let dir = tempfile::tempdir().unwrap();
    let rows: &[(&str, &str)] = &[
        ("{ address = \"127.0.0.1:0\", redirect = \"ftp://www.example.com\" }", "not an https://"),
        ("{ address = \"127.0.0.1:0\", redirect = \"/relative\" }", "not an https://"),
        ("{ address = \"127.0.0.1:0\", redirect = \"https://a.test/?x=1\" }", "query"),
        ("{ address = \"127.0.0.1:0\", redirect = \"https://a.test\", h2c = true }", "plain HTTP/1.1"),
    ];
    for (entry, words) in rows {
        let config = guide_with_listen(&web1, &web2, &format!("[{entry}]"));
        let path = dir.path().join("fulcrum.toml");
        std::fs::write(&path, &config).unwrap();
        let (code, _, stderr) = fulcrum_cmd(&["check", "--config", path.to_str().unwrap()], None);
        assert_ne!(code, 0, "{entry}");
        assert!(stderr.contains("`listen[0].redirect`") && stderr.contains(words), "{entry}: {stderr}");
    }
}
