//! Client connections that are not plain HTTP/1.1 to the proxy: TLS (HTTP/2 or HTTP/1.1 by
//! ALPN), cleartext HTTP/2 with prior knowledge (h2c), and the redirect listener (HTTP → HTTPS).
//!
//! Why a module of its own: the plain HTTP/1.1 path of [`crate::server`] is tuned for speed and
//! stays exactly as it is on plain listeners; a listener with TLS or `h2c = true` hands each
//! connection here instead. Every request, whatever it came over, reaches the same
//! [`crate::proxy::Proxy::handle`], so virtual hosts, balancing, stickiness, rules and headers are
//! the same; members are spoken to over HTTP/1.1 as always.
//!
//! HTTP/2 is hyper's server (the `h2` crate), with these limits (README, "TLS and HTTP/2"):
//!
//! - [`MAX_CONCURRENT_STREAMS`] streams at once per connection (Apache's `H2MaxSessionStreams`);
//!   a client that opens more has them refused (`REFUSED_STREAM`);
//! - [`MAX_HEADER_LIST_SIZE`] bytes of decoded header fields per request (a larger one gets 431
//!   from the h2 layer); `[limits]` request_fields and request_field_size still give Apache's
//!   400, as on HTTP/1.1;
//! - flow control: [`STREAM_WINDOW`] bytes per stream and [`CONNECTION_WINDOW`] per connection,
//!   fixed (no adaptive window): what a client can send ahead of the member reading it is bounded
//!   per connection, as HTTP/1.1's socket buffers bound it;
//! - hyper's defaults for the rest (16 KiB frames, at most 20 streams reset by the client before
//!   being served pending, the rapid-reset defence).
//!
//! A TLS handshake, and the first bytes of an h2c listener's connection, must come within
//! `[limits] header_timeout`, as a request head must; an HTTP/2 connection that starts no request
//! for as long (none in flight) is closed with a GOAWAY, as an idle HTTP/1.1 keep-alive connection
//! is closed after that time. Shutdown is graceful as for HTTP/1.1: an HTTP/2 connection gets a
//! GOAWAY, its streams in flight finish, then it closes.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper::{Request, Version};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::balancer::ClientAddr;
use crate::proxy::SharedProxy;
use crate::tls::TlsInfo;

/// Streams a client may have open at once on one HTTP/2 connection (Apache's
/// `H2MaxSessionStreams` default; nginx allows 128).
pub const MAX_CONCURRENT_STREAMS: u32 = 100;
/// The most bytes of decoded header fields an HTTP/2 request may carry (RFC 9113 §6.5.2's
/// `SETTINGS_MAX_HEADER_LIST_SIZE`).
pub const MAX_HEADER_LIST_SIZE: u32 = 64 * 1024;
/// Bytes a client may send on one stream before Fulcrum reads them (`SETTINGS_INITIAL_WINDOW_SIZE`).
pub const STREAM_WINDOW: u32 = 256 * 1024;
/// Bytes a client may send on all its streams together before Fulcrum reads them.
pub const CONNECTION_WINDOW: u32 = 1024 * 1024;

/// The client connection preface of HTTP/2 (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How a listener that is not plain HTTP/1.1 speaks.
#[derive(Debug, Clone)]
pub enum Kind {
    /// HTTP/2 with prior knowledge, else HTTP/1.1, told apart by the first bytes.
    H2c,
    /// TLS; then HTTP/2 or HTTP/1.1 as ALPN agreed.
    Tls(Arc<rustls::ServerConfig>),
    /// HTTP/1.1 whose every request gets a 301 to this URL and its path ([`redirect`]).
    Redirect(Arc<str>),
}

impl Kind {
    /// What listener `listener` of the configuration speaks; `None` for plain HTTP/1.1.
    pub fn of(listener: &crate::config::Listener) -> Option<Kind> {
        match (&listener.tls, listener.h2c, &listener.redirect) {
            (_, _, Some(to)) => Some(Kind::Redirect(Arc::from(to.as_str()))),
            (Some(tls), _, None) => Some(Kind::Tls(Arc::clone(&tls.server_config))),
            (None, true, None) => Some(Kind::H2c),
            (None, false, None) => None,
        }
    }
}

/// hyper's HTTP/2 server settings (see the module's documentation).
pub fn http2_builder() -> http2::Builder<TokioExecutor> {
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_header_list_size(MAX_HEADER_LIST_SIZE)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .adaptive_window(false);
    builder
}

/// What serving one connection needs besides the connection.
pub struct Serve {
    pub kind: Kind,
    pub proxy: SharedProxy,
    /// The plain listeners' HTTP/1.1 settings, used as they are.
    pub http1: http1::Builder,
    pub http2: http2::Builder<TokioExecutor>,
    /// How long the TLS handshake or h2c's first bytes may take (`[limits] header_timeout`).
    pub handshake_timeout: Duration,
    /// Becomes `true` when shutdown begins.
    pub stop: watch::Receiver<bool>,
    /// The worker's flusher: TLS and h2c connections are written once per round, as plain HTTP/1
    /// ones are (`crate::coalesce`).
    pub flusher: std::sync::Arc<crate::coalesce::Flusher>,
}

/// Serve the connection `stream` from `peer`, accepted on `local`, until it ends.
pub async fn serve(stream: TcpStream, peer: SocketAddr, local: SocketAddr, serve: Serve) {
    let Serve { kind, proxy, http1, http2, handshake_timeout, mut stop, flusher } = serve;
    let client = ClientAddr::new(peer.ip());
    let served = match kind {
        Kind::Redirect(to) => {
            let service = service_fn(move |request: Request<Incoming>| {
                std::future::ready(Ok::<_, std::convert::Infallible>(redirect(&to, &request, local)))
            });
            serve_http1(TokioIo::new(stream), &http1, service, &mut stop).await
        }
        Kind::H2c => {
            let first = tokio::select! {
                first = tokio::time::timeout(handshake_timeout, sniff(stream)) => first,
                () = crate::server::stopping(&mut stop) => return,
            };
            let Ok(Ok((stream, is_h2, read))) = first else {
                tracing::debug!(client = %peer, "h2c listener: no request within the header timeout");
                return;
            };
            let stream = crate::coalesce::Coalesced::new(stream, flusher);
            let io = TokioIo::new(Prefixed { prefix: read.freeze(), inner: stream });
            let builders = (&http1, &http2);
            serve_proxied(io, is_h2, (proxy, client, local), builders, handshake_timeout, &mut stop).await
        }
        Kind::Tls(config) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            let stream = crate::coalesce::Coalesced::new(stream, flusher);
            let handshake = tokio::select! {
                handshake = tokio::time::timeout(handshake_timeout, acceptor.accept(stream)) => handshake,
                () = crate::server::stopping(&mut stop) => return,
            };
            let tls = match handshake {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(client = %peer, "TLS handshake failed: {e}");
                    return;
                }
                Err(_) => {
                    tracing::debug!(client = %peer, "TLS handshake not done within the header timeout");
                    return;
                }
            };
            let connection = tls.get_ref().1;
            let is_h2 = connection.alpn_protocol() == Some(b"h2");
            let client = client.with_tls(TlsInfo::of(connection));
            let builders = (&http1, &http2);
            serve_proxied(TokioIo::new(tls), is_h2, (proxy, client, local), builders, handshake_timeout, &mut stop)
                .await
        }
    };
    if let Err(e) = served {
        tracing::debug!(client = %peer, "connection ended: {e}");
    }
}

/// A redirect listener's answer (Apache's `Redirect permanent / URL`): 301 to `to` followed by
/// the request's path and query, with Apache's page. Nothing reaches a member.
pub fn redirect(to: &str, request: &Request<Incoming>, local: SocketAddr) -> hyper::Response<crate::proxy::ProxyBody> {
    let path = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let location = if path.starts_with('/') { format!("{to}{path}") } else { format!("{to}/") };
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| crate::proxy::host::is_authority(h))
        .map_or_else(|| local.ip().to_string(), |h| without_port(h).to_string());
    let body = format!(
        "<!DOCTYPE HTML PUBLIC \"-//IETF//DTD HTML 2.0//EN\">\n<html><head>\n<title>301 Moved Permanently</title>\n\
         </head><body>\n<h1>Moved Permanently</h1>\n<p>The document has moved <a href=\"{}\">here</a>.</p>\n<hr>\n\
         <address>{} Server at {} Port {}</address>\n</body></html>\n",
        crate::local::html(&location),
        crate::proxy::SERVER,
        crate::local::html(&host),
        local.port()
    );
    let mut response = hyper::Response::new(crate::proxy::ProxyBody::text(body));
    *response.status_mut() = hyper::StatusCode::MOVED_PERMANENTLY;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=iso-8859-1"));
    if let Ok(value) = HeaderValue::from_str(&location) {
        headers.insert(header::LOCATION, value);
    }
    response
}

/// `host` of `host[:port]` (an IPv6 literal keeps its brackets).
fn without_port(authority: &str) -> &str {
    match authority.strip_prefix('[') {
        Some(rest) => rest.find(']').map_or(authority, |end| &authority[..end + 2]),
        None => authority.split(':').next().unwrap_or(authority),
    }
}

/// The proxy's service for one connection: the proxy in force when each request arrives.
fn service(
    proxy: SharedProxy,
    client: ClientAddr,
    local: SocketAddr,
    activity: Option<Arc<Activity>>,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = hyper::Response<crate::proxy::ProxyBody>,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<hyper::Response<crate::proxy::ProxyBody>, std::convert::Infallible>> + Send,
> + Clone {
    let client = Arc::new(client);
    service_fn(move |mut request: Request<Incoming>| {
        if request.version() == Version::HTTP_2 {
            as_one_request(&mut request);
        }
        let busy = activity.as_ref().map(|a| Busy::new(Arc::clone(a)));
        let handled = proxy.load_full().handle(request, Arc::clone(&client), local);
        async move {
            let response = handled.await;
            drop(busy);
            response
        }
    })
}

/// When an HTTP/2 connection last started a request, and how many it is handling: with none for
/// `[limits] header_timeout`, the connection is idle and closes (GOAWAY), as an idle HTTP/1.1
/// keep-alive connection does after the same time.
#[derive(Debug, Default)]
struct Activity {
    /// Requests whose response head is not ready yet.
    handling: std::sync::atomic::AtomicUsize,
    /// Bumped by every request's start and end.
    changes: std::sync::atomic::AtomicU64,
}

/// One request being handled, counted in [`Activity`] until dropped (answered or cancelled).
struct Busy(Arc<Activity>);

impl Busy {
    fn new(activity: Arc<Activity>) -> Busy {
        activity.handling.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        activity.changes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Busy(activity)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.handling.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        self.0.changes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// An HTTP/2 request as an HTTP/1.1 one would carry it, for the members and the rules: the
/// `cookie` fields a client may send one per cookie (RFC 9113 §8.2.3) joined into one with `; `.
fn as_one_request(request: &mut Request<Incoming>) {
    let headers = request.headers_mut();
    if headers.get_all(header::COOKIE).iter().nth(1).is_none() {
        return;
    }
    let mut joined = Vec::new();
    for value in headers.get_all(header::COOKIE) {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(value.as_bytes());
    }
    if let Ok(value) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, value);
    }
}

/// Serve a proxied connection whose protocol is known: HTTP/2 (idle after `idle` without a
/// stream), else HTTP/1.1.
async fn serve_proxied<I>(
    io: I,
    is_h2: bool,
    (proxy, client, local): (SharedProxy, ClientAddr, SocketAddr),
    (http1, http2): (&http1::Builder, &http2::Builder<TokioExecutor>),
    idle: Duration,
    stop: &mut watch::Receiver<bool>,
) -> hyper::Result<()>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    if is_h2 {
        let activity = Arc::new(Activity::default());
        let service = service(proxy, client, local, Some(Arc::clone(&activity)));
        serve_http2(io, http2, service, (&activity, idle), stop).await
    } else {
        serve_http1(io, http1, service(proxy, client, local, None), stop).await
    }
}

async fn serve_http1<I, S>(
    io: I,
    http: &http1::Builder,
    service: S,
    stop: &mut watch::Receiver<bool>,
) -> hyper::Result<()>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = crate::proxy::ProxyBody>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // `with_upgrades`: a 101 answer hands the connection to a tunnel (proxy::tunnel), over TLS too.
    let mut connection = std::pin::pin!(http.serve_connection(io, service).with_upgrades());
    tokio::select! {
        served = connection.as_mut() => served,
        () = crate::server::stopping(stop) => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    }
}

async fn serve_http2<I, S>(
    io: I,
    http: &http2::Builder<TokioExecutor>,
    service: S,
    (activity, idle): (&Activity, Duration),
    stop: &mut watch::Receiver<bool>,
) -> hyper::Result<()>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = crate::proxy::ProxyBody>,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use std::sync::atomic::Ordering::Relaxed;
    let mut connection = std::pin::pin!(http.serve_connection(io, service));
    let mut seen = activity.changes.load(Relaxed);
    loop {
        tokio::select! {
            served = connection.as_mut() => return served,
            // GOAWAY: the streams in flight finish, no new one is taken, then the connection closes.
            () = crate::server::stopping(stop) => break,
            () = tokio::time::sleep(idle) => {
                let now = activity.changes.load(Relaxed);
                if now == seen && activity.handling.load(Relaxed) == 0 {
                    tracing::debug!("HTTP/2 connection idle for {idle:?}: closing it");
                    break;
                }
                seen = now;
            }
        }
    }
    connection.as_mut().graceful_shutdown();
    connection.await
}

/// Read a connection's first bytes until they are HTTP/2's preface or cannot be: whether they
/// are, and what was read (to be read again by the protocol's server).
async fn sniff(mut stream: TcpStream) -> io::Result<(TcpStream, bool, BytesMut)> {
    let mut read = BytesMut::with_capacity(PREFACE.len());
    loop {
        if read.len() >= PREFACE.len() || !PREFACE.starts_with(&read) {
            let is_h2 = read.starts_with(PREFACE);
            return Ok((stream, is_h2, read));
        }
        if stream.read_buf(&mut read).await? == 0 {
            return Ok((stream, false, read));
        }
    }
}

/// A stream whose first bytes were already read: they are read again first.
struct Prefixed<T> {
    prefix: Bytes,
    inner: T,
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.prefix.has_remaining() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sniff_tells_the_preface_from_http1() {
        // (first bytes sent, then the writer closes; is it HTTP/2?)
        let cases: &[(&[u8], bool)] = &[
            (PREFACE, true),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04", true),
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", false),
            (b"GET / HTTP/1.0\r\n\r\n", false),
            (b"PRI * HTTP/1.1\r\n", false),
            (b"PRI", false),
            (b"", false),
        ];
        for (sent, h2) in cases {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let sent = sent.to_vec();
            let writer = tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                let mut c = TcpStream::connect(addr).await.unwrap();
                c.write_all(&sent).await.unwrap();
                c.shutdown().await.unwrap();
                sent
            });
            let (stream, _) = listener.accept().await.unwrap();
            let (stream, is_h2, read) = sniff(stream).await.unwrap();
            let sent = writer.await.unwrap();
            assert_eq!(is_h2, *h2, "{:?}", String::from_utf8_lossy(&sent));
            // Whatever was read is read again, then the rest.
            let mut again = Prefixed { prefix: read.freeze(), inner: stream };
            let mut all = Vec::new();
            again.read_to_end(&mut all).await.unwrap();
            assert_eq!(all, sent);
        }
    }
}
