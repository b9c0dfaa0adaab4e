//! WebSocket through the balancer (`upgrade = "websocket"`, Apache's `upgrade=websocket`): the
//! upgrade request is balanced like any other (sticky routes honoured), then messages flow both
//! ways until a side closes; a member that dies closes the client's side; without `upgrade` the
//! member gets a plain request, as from Apache. Real WebSocket members (tokio-tungstenite) on
//! 127.0.0.1, the real binary; every wait is bounded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::http::Request;

use crate::support::*;

const WAIT: Duration = Duration::from_secs(10);

/// A WebSocket member called `name`: it echoes every text message as `name: message`, and
/// sends the headers of each upgrade request it accepts to the receiver. Sending `true` on the
/// returned `kill` switch makes it drop every connection at once, as a member that dies.
async fn ws_member(
    name: &'static str,
) -> (SocketAddr, mpsc::UnboundedReceiver<Vec<(String, String)>>, watch::Sender<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (seen, heads) = mpsc::unbounded_channel();
    let (kill, killed) = watch::channel(false);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (seen, mut killed) = (seen.clone(), killed.clone());
            tokio::spawn(async move {
                #[allow(clippy::result_large_err)] // tungstenite's callback signature
                let callback = |request: &tokio_tungstenite::tungstenite::handshake::server::Request, response| {
                    let headers = request
                        .headers()
                        .iter()
                        .map(|(n, v)| (n.as_str().to_string(), v.to_str().unwrap_or_default().to_string()))
                        .collect();
                    let _ = seen.send(headers);
                    Ok(response)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else { return };
                loop {
                    let message = tokio::select! {
                        // Dropped: the connection closes.
                        _ = killed.wait_for(|&k| k) => return,
                        message = ws.next() => message,
                    };
                    match message {
                        Some(Ok(Message::Text(text))) => {
                            if ws.send(Message::text(format!("{name}: {text}"))).await.is_err() {
                                return;
                            }
                        }
                        // tungstenite answers a close frame on the next flush; then the
                        // connection is dropped, as a server ends it.
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                            let _ = ws.flush().await;
                            return;
                        }
                        Some(Ok(_)) => {}
                    }
                }
            });
        }
    });
    (addr, heads, kill)
}

fn config(members: &[(SocketAddr, &str)], upgrade: bool) -> String {
    let members: Vec<(String, &str, u32)> = members.iter().map(|(a, r)| (format!("http://{a}"), *r, 1)).collect();
    let members: Vec<(&str, &str, u32)> = members.iter().map(|(u, r, f)| (u.as_str(), *r, *f)).collect();
    let upgrade = if upgrade { "upgrade = \"websocket\"\n" } else { "" };
    let mut c = balancer_config(&members, &format!("stickysession = \"BALANCEID\"\n{upgrade}"), "");
    // server-status, to read the members' busy counts.
    c = c.replacen(
        "[balancer.default]",
        "[[vhost.location]]\npath = \"/server-status\"\nhandler = \"server-status\"\nrequire_ip = [\"127.0.0.1\"]\n\n[balancer.default]",
        1,
    );
    c.replacen("proxy_pass = [", "proxy_pass = [{ path = \"/server-status\", to = \"!\" }, ", 1)
}

/// A WebSocket handshake through Fulcrum with these extra headers.
async fn connect(
    fulcrum: &Fulcrum,
    headers: &[(&str, &str)],
) -> Result<tokio_tungstenite::WebSocketStream<TcpStream>, tokio_tungstenite::tungstenite::Error> {
    let mut request = Request::builder()
        .uri(format!("ws://{}/chat", fulcrum.addr))
        .header("Host", "www.example.com")
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", generate_key());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let stream = TcpStream::connect(fulcrum.addr).await.unwrap();
    let (ws, _) = timeout(WAIT, tokio_tungstenite::client_async(request.body(()).unwrap(), stream))
        .await
        .expect("no handshake answer within 10 s")?;
    Ok(ws)
}

fn header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// The member lines of `/server-status?auto` that say `Busy`.
fn busy_lines(fulcrum: &Fulcrum) -> Vec<String> {
    let (status, _, body) = raw_exchange(
        fulcrum.addr,
        "GET /server-status?auto HTTP/1.1\r\nHost: www.example.com\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200, "{body}");
    body.lines().filter(|l| l.contains("]Busy: ")).map(str::to_string).collect()
}

/// Client sends the upgrade with the sticky cookie of web2: web2 gets the upgrade (with the
/// client's key and X-Forwarded-For), 1,000 messages go each way, the close handshake completes;
/// the member was busy for the tunnel's life and is not after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_honours_the_sticky_route_and_closes_cleanly() {
    let (web1, mut web1_heads, _k1) = ws_member("web1").await;
    let (web2, mut web2_heads, _k2) = ws_member("web2").await;
    let fulcrum = Fulcrum::start(&config(&[(web1, "web1"), (web2, "web2")], true));

    let mut ws = connect(&fulcrum, &[("Cookie", "BALANCEID=balancer.web2")]).await.expect("handshake");
    let head = timeout(WAIT, web2_heads.recv()).await.expect("web2 got no upgrade").unwrap();
    assert_eq!(header(&head, "upgrade"), Some("websocket"), "{head:?}");
    assert!(header(&head, "connection").is_some_and(|c| c.eq_ignore_ascii_case("upgrade")), "{head:?}");
    assert!(header(&head, "sec-websocket-key").is_some(), "{head:?}");
    assert_eq!(header(&head, "x-forwarded-for"), Some("127.0.0.1"), "{head:?}");
    assert!(web1_heads.try_recv().is_err(), "web1 got the sticky upgrade");
    assert_eq!(busy_lines(&fulcrum), ["ProxyBalancer[0]Worker[0]Busy: 0", "ProxyBalancer[0]Worker[1]Busy: 1"]);

    for i in 0..1000 {
        ws.send(Message::text(format!("message {i}"))).await.unwrap();
        let echo = timeout(WAIT, ws.next()).await.expect("no echo within 10 s").expect("stream ended").unwrap();
        assert_eq!(echo, Message::text(format!("web2: message {i}")));
    }
    ws.close(None).await.unwrap();
    // The member's close frame comes back, then the stream ends.
    let mut closed = false;
    while let Some(message) = timeout(WAIT, ws.next()).await.expect("no close within 10 s") {
        match message {
            Ok(Message::Close(_)) => closed = true,
            Ok(other) => panic!("after close: {other:?}"),
            Err(e) => panic!("the close handshake failed: {e}"),
        }
    }
    assert!(closed, "no close frame from the member");
    // The tunnel's end releases the member.
    let deadline = tokio::time::Instant::now() + WAIT;
    while busy_lines(&fulcrum)[1] != "ProxyBalancer[0]Worker[1]Busy: 0" {
        assert!(tokio::time::Instant::now() < deadline, "web2 still busy: {:?}", busy_lines(&fulcrum));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Without a cookie, upgrades are balanced as requests are. The sticky upgrade advanced
    // byrequests' counters as if web2 had been picked (web1 +1, web2 -1), so Apache's order
    // from here is web1, web1, web2.
    let mut served = Vec::new();
    for _ in 0..3 {
        let mut ws = connect(&fulcrum, &[]).await.expect("handshake");
        ws.send(Message::text("who")).await.unwrap();
        let answer = timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap();
        served.push(answer.into_text().unwrap().split(':').next().unwrap().to_string());
    }
    assert_eq!(served, ["web1", "web1", "web2"]);
}

/// The member dies mid-tunnel: the client's connection ends (within seconds, not at the idle
/// limit of 300 s), and the member is no longer counted busy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_dies_mid_tunnel_closes_the_client() {
    let (web1, _heads, kill) = ws_member("web1").await;
    let mut config = config(&[(web1, "web1")], true);
    config = config.replace("[balancer.default]", "[balancer.default]\ntimeout = 300");
    let fulcrum = Fulcrum::start(&config);
    let mut ws = connect(&fulcrum, &[]).await.expect("handshake");
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap(), Message::text("web1: hello"));

    kill.send_replace(true);
    // The end: no message, a close frame (tungstenite's own when the stream ends), or an error.
    let ended = timeout(WAIT, ws.next()).await;
    if let Ok(Some(Ok(message))) = &ended {
        assert!(matches!(message, Message::Close(_)), "from a dead member: {message:?}");
    }
    assert!(ended.is_ok(), "the client's connection stayed open after its member died");
    drop(ws);
    let deadline = tokio::time::Instant::now() + WAIT;
    while busy_lines(&fulcrum)[0] != "ProxyBalancer[0]Worker[0]Busy: 0" {
        assert!(tokio::time::Instant::now() < deadline, "still busy: {:?}", busy_lines(&fulcrum));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Without `upgrade`, as Apache without `upgrade=`: `Connection` and `Upgrade` are hop-by-hop, so
/// the member gets a plain GET, and the client gets the member's plain answer (no 101).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_upgrade_the_member_gets_a_plain_request() {
    let (seen, mut heads) = mpsc::unbounded_channel();
    let member = raw_member(move |mut stream, head| {
        let seen = seen.clone();
        async move {
            let _ = seen.send(String::from_utf8_lossy(&head).to_string());
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nplain").await;
        }
    })
    .await;
    let fulcrum = Fulcrum::start(&config(&[(member, "web1")], false));
    let (status, _, body) = raw_exchange(
        fulcrum.addr,
        "GET /chat HTTP/1.1\r\nHost: www.example.com\r\nConnection: Upgrade, close\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    );
    assert_eq!((status, body.as_str()), (200, "plain"));
    let head = timeout(WAIT, heads.recv()).await.unwrap().unwrap().to_ascii_lowercase();
    assert!(!head.contains("upgrade"), "the member got an upgrade:\n{head}");
    assert!(head.contains("sec-websocket-key: dghlihnhbxbszsbub25jzq=="), "end-to-end headers go on:\n{head}");
}

/// An upgrade the balancer does not allow (here `h2c`, with `upgrade = "websocket"`) is a plain
/// request too; a member that answers 101 to it anyway gets a 502 (it switched unasked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_to_another_protocol_is_not_passed_on() {
    let member = raw_member(|mut stream, _head| async move {
        let _ =
            stream.write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n").await;
    })
    .await;
    let fulcrum = Fulcrum::start(&config(&[(member, "web1")], true));
    let (status, _, _) = raw_exchange(
        fulcrum.addr,
        "GET / HTTP/1.1\r\nHost: www.example.com\r\nConnection: Upgrade, HTTP2-Settings, close\r\nUpgrade: h2c\r\n\
         HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    );
    assert_eq!(status, 502);
}

/// WebSocket over TLS (`wss://`): the TLS listener's HTTP/1.1 connections upgrade as plain ones do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_over_tls() {
    use tokio_rustls::rustls::{
        self, pki_types::CertificateDer, pki_types::ServerName, pki_types::pem::PemObject as _,
    };

    let (web1, mut heads, _kill) = ws_member("web1").await;
    let certs = tempfile::tempdir().unwrap();
    let ca = crate::certs::TestCa::new(certs.path());
    ca.issue("www.example.com", "site");
    let config = config(&[(web1, "web1")], true).replacen(
        "listen = [\"127.0.0.1:0\"]",
        &format!("listen = [{}]", crate::tls::tls_entry(&ca, "site")),
        1,
    );
    let fulcrum = Fulcrum::start(&config);

    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca.ca_file()).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(fulcrum.addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(client))
        .connect(ServerName::try_from("www.example.com").unwrap(), tcp)
        .await
        .expect("TLS handshake");
    let request = Request::builder()
        .uri("wss://www.example.com/chat")
        .header("Host", "www.example.com")
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", generate_key())
        .body(())
        .unwrap();
    let (mut ws, _) =
        timeout(WAIT, tokio_tungstenite::client_async(request, tls)).await.expect("no handshake within 10 s").unwrap();
    let head = timeout(WAIT, heads.recv()).await.unwrap().unwrap();
    assert_eq!(header(&head, "x-forwarded-proto"), Some("https"), "{head:?}");
    for i in 0..10 {
        ws.send(Message::text(format!("secret {i}"))).await.unwrap();
        let echo = timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(echo, Message::text(format!("web1: secret {i}")));
    }
    ws.close(None).await.unwrap();
}
