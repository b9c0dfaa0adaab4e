//! HTTPS members (`url = "https://..."`, Apache's `SSLProxyEngine on` with `SSLProxyVerify
//! require`): the member's certificate must chain to the balancer's `tls_ca` (else the system's
//! CAs) and name the member's host, sent as SNI; connections are pooled as plain ones are; a
//! member that asks for a client certificate gets the balancer's. Real TLS members (rustls with
//! certificates the test makes, rcgen) on 127.0.0.1, the real binary.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, server::WebPkiClientVerifier};

use crate::certs::TestCa;
use crate::support::*;

/// What an HTTPS member saw: the SNI name and whether a client certificate came, per TLS
/// connection.
#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    sni: Mutex<Vec<Option<String>>>,
    client_certificates: Mutex<Vec<bool>>,
}

/// An HTTPS member called `name`, presenting `dir/FILE.pem` (and its key); when `client_ca` is
/// given it requires a client certificate from that CA. It answers `served-by: NAME`.
async fn https_member(name: &'static str, dir: &Path, file: &str, client_ca: Option<&Path>) -> (u16, Arc<Seen>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(dir.join(format!("{file}.pem"))).unwrap().map(Result::unwrap).collect();
    let key = PrivateKeyDer::from_pem_file(dir.join(format!("{file}.key"))).unwrap();
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca).unwrap() {
                roots.add(cert.unwrap()).unwrap();
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider)).build().unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(builder.with_single_cert(chain, key).unwrap()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Seen::default());
    let state = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, seen) = (acceptor.clone(), Arc::clone(&state));
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                seen.connections.fetch_add(1, Ordering::SeqCst);
                let session = tls.get_ref().1;
                seen.sni.lock().unwrap().push(session.server_name().map(str::to_string));
                seen.client_certificates.lock().unwrap().push(session.peer_certificates().is_some());
                let service = service_fn(move |_request| async move {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from(format!(
                        "served-by: {name}\n"
                    )))))
                });
                let _ = http1::Builder::new().serve_connection(TokioIo::new(tls), service).await;
            });
        }
    });
    (port, seen)
}

/// A balancer of `members` (`https://localhost:PORT`, route) with `extra` lines.
fn config(members: &[(u16, &str)], extra: &str) -> String {
    let urls: Vec<(String, &str, u32)> =
        members.iter().map(|(p, r)| (format!("https://localhost:{p}"), *r, 1)).collect();
    let urls: Vec<(&str, &str, u32)> = urls.iter().map(|(u, r, f)| (u.as_str(), *r, *f)).collect();
    balancer_config(&urls, extra, "")
}

/// `n` GETs through Fulcrum: (status, served-by) of each.
async fn answers(fulcrum: &Fulcrum, n: usize) -> Vec<(u16, String)> {
    let client = client();
    let mut out = Vec::new();
    for _ in 0..n {
        let answer = get(&client, &fulcrum.url("/"), &[]).await;
        out.push((answer.status.as_u16(), answer.served_by().to_string()));
    }
    out
}

/// Waits up to 10 s for `text` in Fulcrum's log.
fn log_says(fulcrum: &Fulcrum, text: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let log = fulcrum.log();
        if log.contains(text) || std::time::Instant::now() > deadline {
            return log;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Client asks for `/`; the member's certificate is from a CA Fulcrum does not trust (the
/// system's CAs, then another test CA): the client gets 502, the log says why, the member stays
/// in (a retry is another 502, not a 503).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_member_with_an_untrusted_certificate_gets_a_502_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path());
    ca.issue("localhost", "member");
    let (port, seen) = https_member("web1", dir.path(), "member", None).await;

    let fulcrum = Fulcrum::start(&config(&[(port, "web1")], ""));
    assert_eq!(answers(&fulcrum, 2).await, [(502, String::new()), (502, String::new())]);
    let log = log_says(&fulcrum, "invalid peer certificate");
    assert!(
        log.contains(&format!("TLS handshake with localhost:{port} failed: invalid peer certificate: UnknownIssuer")),
        "{log}"
    );
    assert_eq!(seen.connections.load(Ordering::SeqCst), 0, "no handshake may complete");

    // Another CA than the member's.
    let other = tempfile::tempdir().unwrap();
    TestCa::new(other.path());
    let fulcrum =
        Fulcrum::start(&config(&[(port, "web1")], &format!("tls_ca = \"{}\"", other.path().join("ca.pem").display())));
    assert_eq!(answers(&fulcrum, 1).await, [(502, String::new())]);
    // The same CA name, another key: the signature does not verify.
    let log = log_says(&fulcrum, "invalid peer certificate");
    assert!(log.contains("invalid peer certificate: BadSignature"), "{log}");
}

/// With `tls_ca` naming the members' CA: requests alternate between two HTTPS members as over
/// plain HTTP, each member gets SNI `localhost`, and keep-alive connections are reused (one TLS
/// connection per member for six requests).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_its_ca_an_https_member_is_balanced_and_its_connections_reused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path());
    ca.issue("localhost", "member");
    let (p1, seen1) = https_member("web1", dir.path(), "member", None).await;
    let (p2, seen2) = https_member("web2", dir.path(), "member", None).await;
    // One worker: member connections are pooled per worker.
    let fulcrum = Fulcrum::start_with_env(
        &config(&[(p1, "web1"), (p2, "web2")], &format!("tls_ca = \"{}\"", ca.ca_file().display())),
        "info",
        &[("FULCRUM_WORKERS", "1")],
    );
    let served: Vec<String> = answers(&fulcrum, 6).await.into_iter().map(|(s, by)| format!("{s} {by}")).collect();
    assert_eq!(served, ["200 web1", "200 web2", "200 web1", "200 web2", "200 web1", "200 web2"]);
    for seen in [&seen1, &seen2] {
        assert_eq!(seen.connections.load(Ordering::SeqCst), 1, "a new TLS connection per request");
        assert_eq!(*seen.sni.lock().unwrap(), [Some("localhost".to_string())]);
        assert_eq!(*seen.client_certificates.lock().unwrap(), [false]);
    }
}

/// A member that requires a client certificate: without `tls_client_certificate` the handshake
/// fails (502); with one from the CA it trusts, it answers and saw the certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_asks_for_a_client_certificate_gets_the_balancers() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path());
    ca.issue("localhost", "member");
    ca.issue("fulcrum.example", "client");
    let (port, seen) = https_member("web1", dir.path(), "member", Some(&ca.ca_file())).await;
    let trust = format!("tls_ca = \"{}\"", ca.ca_file().display());

    let fulcrum = Fulcrum::start(&config(&[(port, "web1")], &trust));
    assert_eq!(answers(&fulcrum, 1).await, [(502, String::new())]);
    let log = log_says(&fulcrum, "TLS with the member failed");
    assert!(log.contains("received fatal alert: CertificateRequired"), "{log}");
    drop(fulcrum);

    // One worker: member connections are pooled per worker, and the two requests may come on two
    // client connections, which two workers could take one each (two handshakes).
    let fulcrum = Fulcrum::start_with_env(
        &config(
            &[(port, "web1")],
            &format!(
                "{trust}\ntls_client_certificate = \"{}\"\ntls_client_key = \"{}\"",
                dir.path().join("client.pem").display(),
                dir.path().join("client.key").display()
            ),
        ),
        "info",
        &[("FULCRUM_WORKERS", "1")],
    );
    assert_eq!(answers(&fulcrum, 2).await, [(200, "web1".to_string()), (200, "web1".to_string())]);
    assert_eq!(*seen.client_certificates.lock().unwrap(), [true]);
}

/// Mistakes in the members' TLS settings are `fulcrum check` errors at their key, naming the file.
#[test]
fn member_tls_mistakes_are_check_errors() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path());
    ca.issue("localhost", "client");
    std::fs::write(dir.path().join("empty.pem"), "").unwrap();
    let cases: &[(&str, &str, &str)] = &[
        ("https", "tls_ca = \"missing.pem\"", "`balancer.default.tls_ca`: cannot read"),
        ("https", "tls_ca = \"empty.pem\"", "empty.pem holds no certificate"),
        (
            "https",
            "tls_client_certificate = \"client.pem\"",
            "`balancer.default.tls_client_key`: tls_client_certificate needs tls_client_key",
        ),
        (
            "https",
            "tls_client_certificate = \"client.pem\"\ntls_client_key = \"ca.pem\"",
            "`balancer.default.tls_client_key`",
        ),
        ("http", "tls_ca = \"ca.pem\"", "the TLS settings are for https:// members, and this balancer has none"),
    ];
    for (scheme, extra, expected) in cases {
        let config = balancer_config(&[(&format!("{scheme}://localhost:1"), "web1", 1)], extra, "");
        std::fs::write(dir.path().join("fulcrum.toml"), config).unwrap();
        let (code, out, err) = fulcrum_cmd(&["check", "--config", "fulcrum.toml"], Some(dir.path()));
        assert_ne!(code, 0, "{extra}: accepted\n{out}");
        assert!(err.contains(expected), "{extra}: expected `{expected}` in:\n{err}");
        assert!(err.contains("fulcrum.toml:"), "{extra}: no location in:\n{err}");
    }
}
