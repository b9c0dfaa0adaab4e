//! A small echo backend: what `fulcrum demo` runs behind the proxy, and what the tests use as
//! real members on 127.0.0.1.
//!
//! Every response is plain text that says who answered and what arrived:
//!
//! ```text
//! served-by: web1
//! request: GET /path?q HTTP/1.1
//! body-bytes: 0
//! header: host: 127.0.0.1:18001
//! header: x-forwarded-for: 127.0.0.1
//! ```
//!
//! Requests carrying an `x-request-id` header have it recorded ([`EchoServer::request_ids`]), so
//! tests can count what reached which backend. Some paths change the answer, for tests: `/status/NNN` answers with status NNN, `/sleep/MS`
//! waits MS milliseconds first, `/set-cookie/NAME=VALUE` adds that `Set-Cookie` header, and
//! `/location?URL` answers 302 with `Location: URL` (`SELF` in it becomes `http://ADDR`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A running echo backend. Dropping it stops it.
#[derive(Debug)]
pub struct EchoServer {
    pub addr: SocketAddr,
    pub name: String,
    served: Arc<AtomicU64>,
    connections: Arc<AtomicU64>,
    ids: Arc<std::sync::Mutex<Vec<String>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl EchoServer {
    /// Listen on `addr` (port 0 for any) and answer as `name`.
    pub async fn start(addr: SocketAddr, name: &str) -> std::io::Result<EchoServer> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let served = Arc::new(AtomicU64::new(0));
        let connections = Arc::new(AtomicU64::new(0));
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let ids = Arc::new(std::sync::Mutex::new(Vec::new()));
        let counters =
            Counters { served: Arc::clone(&served), connections: Arc::clone(&connections), ids: Arc::clone(&ids) };
        let task = tokio::spawn(serve(listener, name.to_string(), counters, addr, stopped));
        Ok(EchoServer { addr, name: name.to_string(), served, connections, ids, stop: Some(stop), task })
    }

    /// Requests answered so far.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::SeqCst)
    }

    /// Stop listening and close every open connection; returns once they are all closed (dropping
    /// the server also stops it, but without waiting).
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }

    /// The `x-request-id` of every request answered so far, in order.
    pub fn request_ids(&self) -> Vec<String> {
        self.ids.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What an echo server counts, shared with its [`EchoServer`] handle.
#[derive(Clone)]
struct Counters {
    served: Arc<AtomicU64>,
    connections: Arc<AtomicU64>,
    ids: Arc<std::sync::Mutex<Vec<String>>>,
}

async fn serve(
    listener: TcpListener,
    name: String,
    counters: Counters,
    addr: SocketAddr,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let name: Arc<str> = Arc::from(name);
    // Connection tasks live in this set, so stopping the server (aborting this task) also closes
    // every keep-alive connection: a stopped backend is really gone.
    let mut open = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = &mut stopped => {
                open.shutdown().await;
                return;
            }
            accepted = listener.accept() => accepted,
            Some(_) = open.join_next() => continue,
        };
        let Ok((stream, _)) = accepted else { continue };
        counters.connections.fetch_add(1, Ordering::SeqCst);
        let (name, counters) = (Arc::clone(&name), counters.clone());
        open.spawn(async move {
            let service = service_fn(move |req| echo(req, Arc::clone(&name), counters.clone(), addr));
            // As many header fields as a common backend takes (nginx: 100 lines of 8 KiB, no
            // count limit): Fulcrum adds X-Forwarded-* to what its own limit let through.
            let _ = http1::Builder::new().max_headers(1000).serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

async fn echo(
    request: Request<Incoming>,
    name: Arc<str>,
    counters: Counters,
    addr: SocketAddr,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let body_bytes = body.collect().await.map(|b| b.to_bytes().len()).unwrap_or(0);
    let path = parts.uri.path();
    let mut status = StatusCode::OK;
    if let Some(code) = path.strip_prefix("/status/").and_then(|c| c.parse::<u16>().ok()) {
        status = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    }
    if let Some(ms) = path.strip_prefix("/sleep/").and_then(|c| c.parse::<u64>().ok()) {
        tokio::time::sleep(Duration::from_millis(ms.min(60_000))).await;
    }
    let mut text = format!(
        "served-by: {name}\nrequest: {} {} {:?}\nbody-bytes: {body_bytes}\n",
        parts.method, parts.uri, parts.version
    );
    for (k, v) in &parts.headers {
        text.push_str(&format!("header: {k}: {}\n", String::from_utf8_lossy(v.as_bytes())));
    }
    if let Some(id) = parts.headers.get("x-request-id").and_then(|v| v.to_str().ok()) {
        counters.ids.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(id.to_string());
    }
    counters.served.fetch_add(1, Ordering::SeqCst);
    let mut response = Response::new(Full::new(Bytes::from(text)));
    *response.status_mut() = status;
    response.headers_mut().insert("x-served-by", name.parse().unwrap_or_else(|_| "echo".parse().unwrap()));
    response.headers_mut().insert(hyper::header::CONTENT_TYPE, "text/plain".parse().unwrap());
    if path == "/location"
        && let Ok(value) = parts.uri.query().unwrap_or("").replace("SELF", &format!("http://{addr}")).parse()
    {
        *response.status_mut() = StatusCode::FOUND;
        response.headers_mut().insert(hyper::header::LOCATION, value);
    }
    if let Some(cookie) = path.strip_prefix("/set-cookie/")
        && let Ok(value) = cookie.parse()
    {
        response.headers_mut().append(hyper::header::SET_COOKIE, value);
    }
    Ok(response)
}
