//! Upgraded connections: WebSocket and any other protocol a balancer lets clients switch to
//! (`upgrade = "websocket"`, Apache's `upgrade=` worker parameter of mod_proxy_http 2.4.47+).
//!
//! The `Upgrade` request is balanced like any other (sticky routes, rules, failover before the
//! member answers). When the member answers `101 Switching Protocols` for the protocol asked
//! for, the client gets the 101 and both connections become one tunnel: bytes flow both ways
//! until either side closes, as in Apache's `ap_proxy_tunnel_run`.
//!
//! - **Idle limit**: the member's response timeout (`timeout` of the member or balancer, else
//!   `proxy_timeout`), as Apache uses the worker's timeout for the tunnel; no bytes either way
//!   for that long closes both sides.
//! - **Lifetime**: `tunnel_lifetime` of the balancer, if set, closes the tunnel after that long
//!   whatever flows (nginx and HAProxy have no such default either; it is for operators who
//!   want to bound how long a client holds a member).
//! - **Busy**: the member's lease is held for the tunnel's life, so `busy` (bybusyness, the
//!   manager, server-status) counts an open tunnel as a request in flight; the bytes are counted
//!   in the member's To/From when the tunnel closes.
//! - **Closing**: the first side to close (its end of stream, or an error such as a reset) ends
//!   the tunnel: what it sent before is delivered, then both connections close, as nginx does.
//!   A client whose member is gone sees its connection close at once, and the member's busy
//!   count drops, instead of both waiting for the idle limit. (WebSocket closes with frames
//!   first; a TCP half-close has no meaning to it.)
//! - **Graceful stop**: a tunnel is not a request in flight; it is closed when its worker ends.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::time::Instant;

use super::upstream::MemberConn;
use crate::balancer::Lease;

/// One tunnel's member side and limits, ready for the client's upgraded connection.
pub struct Tunnel {
    /// The request's id, for the log.
    pub request: u64,
    pub conn: MemberConn,
    pub lease: Lease,
    pub idle: Duration,
    pub lifetime: Option<Duration>,
}

/// How a tunnel ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// The client closed its side (its end of stream; the member is told at once).
    ClientClosed,
    /// The member closed its side.
    MemberClosed,
    /// One side failed (a reset, a broken pipe); both were closed.
    Failed(io::ErrorKind),
    Idle,
    Lifetime,
}

/// Wait for hyper to hand over the client's connection (once it has written the 101), then
/// relay until the tunnel ends. Runs as a task of its own.
pub async fn run(upgrade: OnUpgrade, tunnel: Tunnel) {
    let Tunnel { request, mut conn, lease, idle, lifetime } = tunnel;
    let member = lease.member().config.url.clone();
    let balancer = lease.balancer().config.name.clone();
    let client = match upgrade.await {
        Ok(upgraded) => upgraded,
        Err(e) => {
            tracing::debug!(request, %balancer, %member, "the client's connection was not handed over: {e}");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    // What the member sent right after its 101 (its first frames) goes first.
    let early = conn.buf.split();
    if !early.is_empty() && client.write_all(&early).await.is_err() {
        return;
    }
    let (ended, up, down) = relay(&mut client, &mut conn.stream, idle, lifetime).await;
    lease.member().add_sent(up);
    lease.member().add_read(down + early.len() as u64);
    tracing::debug!(request, %balancer, %member, bytes_to_member = up, bytes_to_client = down, "tunnel ended: {ended:?}");
}

/// Copy both ways between `client` and `member` until both directions end, one fails, nothing
/// moves for `idle`, or `lifetime` has passed. Returns how it ended and the bytes copied
/// client → member and member → client.
pub async fn relay<C, M>(
    client: &mut C,
    member: &mut M,
    idle: Duration,
    lifetime: Option<Duration>,
) -> (Ended, u64, u64)
where
    C: AsyncRead + AsyncWrite + Unpin,
    M: AsyncRead + AsyncWrite + Unpin,
{
    let start = Instant::now();
    let last = AtomicU64::new(0);
    let up = AtomicU64::new(0);
    let down = AtomicU64::new(0);
    let client = Watched { inner: client, start, last: &last, counted: &up };
    let member = Watched { inner: member, start, last: &last, counted: &down };
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut member_read, mut member_write) = tokio::io::split(member);
    // Each direction copies until its reader ends (and flushes what it wrote); the first to end
    // ends the tunnel.
    let to_member = tokio::io::copy(&mut client_read, &mut member_write);
    let to_client = tokio::io::copy(&mut member_read, &mut client_write);
    let watchdog = async {
        loop {
            let quiet_since = start + Duration::from_millis(last.load(Ordering::Relaxed));
            let idle_at = quiet_since + idle;
            let end = lifetime.map(|l| start + l);
            let wake = end.map_or(idle_at, |e| e.min(idle_at));
            tokio::time::sleep_until(wake).await;
            let now = Instant::now();
            if end.is_some_and(|e| now >= e) {
                return Ended::Lifetime;
            }
            // Activity since the sleep began moves the limit on.
            let quiet_since = start + Duration::from_millis(last.load(Ordering::Relaxed));
            if now >= quiet_since + idle {
                return Ended::Idle;
            }
        }
    };
    let ended = tokio::select! {
        copied = to_member => match copied {
            Ok(_) => Ended::ClientClosed,
            Err(e) => Ended::Failed(e.kind()),
        },
        copied = to_client => match copied {
            Ok(_) => Ended::MemberClosed,
            Err(e) => Ended::Failed(e.kind()),
        },
        why = watchdog => why,
    };
    // Tell both peers now, so neither waits for the other (a write to a side that is already
    // gone just fails); the connections close when the callers drop them.
    let _ = client_write.shutdown().await;
    let _ = member_write.shutdown().await;
    (ended, up.load(Ordering::Relaxed), down.load(Ordering::Relaxed))
}

/// A stream that notes when bytes last moved through it (milliseconds since the tunnel began)
/// and counts the bytes read from it.
struct Watched<'a, S> {
    inner: &'a mut S,
    start: Instant,
    last: &'a AtomicU64,
    counted: &'a AtomicU64,
}

impl<S> Watched<'_, S> {
    fn moved(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<'_, S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut *self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.counted.fetch_add(n as u64, Ordering::Relaxed);
            self.moved();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<'_, S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut *self.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.moved();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}

/// The client's `Upgrade` offer, kept with the request until a member accepts it.
pub struct Offer {
    /// The `Upgrade` header's value as the client sent it.
    pub protocols: String,
    /// hyper's handle on the client's connection, taken by the attempt whose member switched.
    pub upgrade: std::sync::Mutex<Option<OnUpgrade>>,
}

impl Offer {
    /// The offer of a request that asks to switch protocols (`Connection: upgrade` and an
    /// `Upgrade` header, HTTP/1.1), taking hyper's upgrade handle out of its extensions.
    pub fn take(parts: &mut hyper::http::request::Parts) -> Option<Offer> {
        if parts.version != hyper::Version::HTTP_11 {
            return None;
        }
        let asks = parts
            .headers
            .get_all(hyper::header::CONNECTION)
            .iter()
            .any(|v| v.as_bytes().split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade")));
        let protocols = crate::request::joined(&parts.headers, hyper::header::UPGRADE)?;
        if !asks {
            return None;
        }
        let upgrade = parts.extensions.remove::<OnUpgrade>()?;
        Some(Offer { protocols, upgrade: std::sync::Mutex::new(Some(upgrade)) })
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, duplex};

    use super::*;

    /// client ↔ [relay] ↔ member over in-memory pipes: bytes both ways, then the member closes,
    /// and the client reads what the member sent before the end.
    #[tokio::test]
    async fn bytes_flow_both_ways_until_a_side_closes() {
        let (mut client, mut client_side) = duplex(64);
        let (mut member, mut member_side) = duplex(64);
        let relay =
            tokio::spawn(async move { relay(&mut client_side, &mut member_side, Duration::from_secs(5), None).await });
        client.write_all(b"hello member").await.unwrap();
        let mut got = [0u8; 12];
        member.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello member");
        member.write_all(b"hi client").await.unwrap();
        let mut got = [0u8; 9];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hi client");
        member.write_all(b"bye").await.unwrap();
        member.shutdown().await.unwrap();
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"bye");
        assert_eq!(relay.await.unwrap(), (Ended::MemberClosed, 12, 12));
    }

    /// Real time, short limits: activity at 200 ms moves an idle limit of 300 ms to 500 ms.
    #[tokio::test]
    async fn a_quiet_tunnel_ends_at_the_idle_limit_and_activity_moves_it() {
        let (mut client, mut client_side) = duplex(64);
        let (mut member, mut member_side) = duplex(64);
        let started = Instant::now();
        let relay =
            tokio::spawn(
                async move { relay(&mut client_side, &mut member_side, Duration::from_millis(300), None).await },
            );
        tokio::time::sleep(Duration::from_millis(200)).await;
        client.write_all(b"x").await.unwrap();
        let mut one = [0u8; 1];
        member.read_exact(&mut one).await.unwrap();
        let (ended, up, down) = relay.await.unwrap();
        assert_eq!((ended, up, down), (Ended::Idle, 1, 0));
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(490), "ended after {took:?}, before the moved idle limit");
        // Both peers were told.
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        member.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn the_lifetime_ends_a_busy_tunnel() {
        let (mut client, mut client_side) = duplex(1024);
        let (_member, mut member_side) = duplex(1024 * 1024);
        let relay = tokio::spawn(async move {
            relay(&mut client_side, &mut member_side, Duration::from_secs(10), Some(Duration::from_millis(400))).await
        });
        // A tick every 20 ms, past the lifetime: the relay's end goes away at 400 ms.
        while client.write_all(b"tick").await.is_ok() && !relay.is_finished() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (ended, up, _) = relay.await.unwrap();
        assert_eq!(ended, Ended::Lifetime);
        assert!(up >= 4, "{up} bytes went up");
    }
}
