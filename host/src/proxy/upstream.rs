//! Connections to members: a small keep-alive pool per member, with connect and send kept apart.
//!
//! Connecting first and handing the request over only on a live connection is what makes
//! failover safe: when a member refuses the connection, the request (body included, still unread)
//! goes to the next member; once a request's bytes may have reached a member it is never sent
//! again. A pooled connection is checked before use ([`MemberConn::is_alive`]: the member may have
//! closed it while it was idle) and a stale one is dropped for another.
//!
//! An `https://` member's connections are TLS ([`MemberStream::Tls`]): the handshake is part of
//! connecting (within `connectiontimeout`), and a failed one ([`ConnectError::Tls`], an
//! untrusted certificate for instance) is the member's answer to the request, a 502.
//!
//! Connections belong to the worker (runtime thread) that opened them: each worker drives its
//! own sockets, so no request waits on another thread's event loop. The pool keeps each idle
//! connection with its worker's number and hands it only to that worker.

use std::cell::Cell;
use std::io;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use std::pin::Pin;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use crate::coalesce::Coalesced;
use crate::tls::MemberTls;

/// Idle connections kept per member; more are closed when released.
const MAX_IDLE: usize = 256;
/// Read buffer of a new connection: room for a typical response head and a small body.
const READ_BUFFER: usize = 8 * 1024;

thread_local! {
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// Tell this thread which worker it belongs to (the server does, as each runtime thread starts).
pub fn bind_worker(worker: usize) {
    WORKER.with(|w| w.set(worker));
}

fn worker() -> usize {
    WORKER.with(Cell::get)
}

/// Keep-alive connections to one member.
#[derive(Debug)]
pub struct MemberPool {
    /// `host:port` to connect to.
    address: String,
    connect_timeout: Option<Duration>,
    /// For an `https://` member.
    tls: Option<MemberTls>,
    /// Idle connections, each with the worker that owns it.
    idle: Mutex<Vec<(usize, MemberConn)>>,
}

/// Why no connection could be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connecting to {0} timed out")]
    Timeout(String),
    #[error("connecting to {0}: {1}")]
    Io(String, std::io::Error),
    /// The TLS handshake with an `https://` member failed (its certificate, most often).
    #[error("TLS handshake with {0} failed: {1}")]
    Tls(String, std::io::Error),
}

/// A member connection's socket: plain TCP, or TLS for an `https://` member.
#[derive(Debug)]
pub enum MemberStream {
    Plain(TcpStream),
    /// Plain TCP opened on a worker: what is written goes out at the end of the worker's round,
    /// with the other requests' and responses' bytes ([`crate::coalesce`]), so that a member
    /// asleep on another core is woken once for them all rather than once per request.
    Batched(Coalesced),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl MemberStream {
    /// The error met writing bytes that were handed over earlier, when they go out at the end of
    /// the round ([`MemberStream::Batched`]): the request head did not reach the member.
    pub fn take_write_error(&self) -> Option<io::Error> {
        match self {
            MemberStream::Batched(s) => s.take_error(),
            MemberStream::Plain(_) | MemberStream::Tls(_) => None,
        }
    }

    /// Take back what is still waiting for the end of the round ([`MemberStream::Batched`]), so
    /// that it is never written: whether there was any (then the request did not reach the
    /// member, and may go to another connection).
    pub fn withdraw_unsent(&self) -> bool {
        match self {
            MemberStream::Batched(s) => s.withdraw(),
            MemberStream::Plain(_) | MemberStream::Tls(_) => false,
        }
    }

    /// Make sure what was written so far is on its way now, not at the end of the round: for
    /// writes whose failure decides what happens next (a request body's).
    pub async fn write_through(&mut self) -> io::Result<()> {
        use tokio::io::AsyncWriteExt as _;
        match self {
            MemberStream::Batched(s) => std::future::poll_fn(|cx| s.poll_write_through(cx)).await,
            MemberStream::Plain(_) | MemberStream::Tls(_) => self.flush().await,
        }
    }
}

impl AsyncRead for MemberStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MemberStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MemberStream::Batched(s) => Pin::new(s).poll_read(cx, buf),
            MemberStream::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MemberStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MemberStream::Plain(s) => Pin::new(s).poll_write(cx, data),
            MemberStream::Batched(s) => Pin::new(s).poll_write(cx, data),
            MemberStream::Tls(s) => Pin::new(&mut **s).poll_write(cx, data),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MemberStream::Plain(s) => Pin::new(s).poll_flush(cx),
            MemberStream::Batched(s) => Pin::new(s).poll_flush(cx),
            MemberStream::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MemberStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MemberStream::Batched(s) => Pin::new(s).poll_shutdown(cx),
            MemberStream::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}

/// A connection to a member, checked out of its pool. [`MemberConn::release`] puts it back once
/// its response has been read whole; dropping it closes it.
#[derive(Debug)]
pub struct MemberConn {
    pub stream: MemberStream,
    /// Bytes read from the member and not used yet.
    pub buf: BytesMut,
    /// The request head being written (kept to reuse its allocation).
    pub head: Vec<u8>,
    /// Came from the idle pool (so it may have been closed by the member meanwhile).
    pub reused: bool,
    /// The timer of the member's `timeout`, kept from request to request ([`MemberConn::timer`]).
    timer: Option<Pin<Box<Sleep>>>,
    pool: Arc<MemberPool>,
}

impl MemberPool {
    pub fn new(address: String, connect_timeout: Option<Duration>, tls: Option<MemberTls>) -> MemberPool {
        MemberPool { address, connect_timeout, tls, idle: Mutex::new(Vec::new()) }
    }

    /// One of this worker's idle live connections, or a new one.
    pub async fn checkout(self: &Arc<Self>) -> Result<MemberConn, ConnectError> {
        let me = worker();
        loop {
            let idle = {
                let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
                idle.iter().rposition(|(w, _)| *w == me).map(|i| idle.swap_remove(i).1)
            };
            match idle {
                Some(mut conn) => {
                    if conn.is_alive() {
                        conn.reused = true;
                        return Ok(conn);
                    }
                    // Closed by the member: dropped.
                }
                None => break,
            }
        }
        // Boxed: the connecting future (a TLS handshake's state most of all) is over a kilobyte,
        // and unboxed it would make every request's future that much larger (and every move of
        // it that much longer), though most requests take an idle connection and never connect.
        Box::pin(self.connect()).await
    }

    /// A new connection to the member.
    async fn connect(self: &Arc<Self>) -> Result<MemberConn, ConnectError> {
        // The TCP connection and the TLS handshake share `connectiontimeout`.
        let connect = async {
            let tcp = TcpStream::connect(self.address.as_str())
                .await
                .map_err(|e| ConnectError::Io(self.address.clone(), e))?;
            let _ = tcp.set_nodelay(true);
            match &self.tls {
                None => Ok(match crate::coalesce::current() {
                    Some(flusher) => MemberStream::Batched(Coalesced::new(tcp, flusher)),
                    None => MemberStream::Plain(tcp),
                }),
                Some(tls) => match tls.connector.connect(tls.server_name.clone(), tcp).await {
                    Ok(stream) => Ok(MemberStream::Tls(Box::new(stream))),
                    Err(e) => Err(ConnectError::Tls(self.address.clone(), e)),
                },
            }
        };
        let stream = match self.connect_timeout {
            Some(t) => {
                tokio::time::timeout(t, connect).await.map_err(|_| ConnectError::Timeout(self.address.clone()))?
            }
            None => connect.await,
        }?;
        Ok(MemberConn {
            stream,
            buf: BytesMut::with_capacity(READ_BUFFER),
            head: Vec::with_capacity(512),
            reused: false,
            timer: None,
            pool: Arc::clone(self),
        })
    }
}

impl MemberConn {
    /// A timer that fires at `deadline`, for a request on this connection: the one the last
    /// request used, moved forward, or a new one the first time; give it back with
    /// [`MemberConn::keep_timer`]. Moving a registered timer's deadline later is a store (tokio
    /// leaves it where it is in its wheel until the old deadline comes), where a new timer per
    /// request is an insertion into the wheel and a removal, each under the timer driver's lock.
    /// A kept timer whose deadline passes while the connection is idle wakes the task of the
    /// connection's last request, if it is still there, which finds nothing to do.
    pub fn timer(&mut self, deadline: Instant) -> Pin<Box<Sleep>> {
        match self.timer.take() {
            Some(mut timer) => {
                timer.as_mut().reset(deadline);
                timer
            }
            None => Box::pin(tokio::time::sleep_until(deadline)),
        }
    }

    /// Keep `timer` for the next request.
    pub fn keep_timer(&mut self, timer: Pin<Box<Sleep>>) {
        self.timer = Some(timer);
    }

    /// Return the connection to its pool for the next request.
    pub fn release(self) {
        let pool = Arc::clone(&self.pool);
        let mut idle = pool.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE {
            idle.push((worker(), self));
        }
    }

    /// Whether an idle connection can carry a request: the member has not closed it (nor sent
    /// anything unasked). Costs no system call unless the socket has become readable.
    fn is_alive(&mut self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let plain = |stream: &TcpStream, cx: &mut Context<'_>| match stream.poll_read_ready(cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        };
        match &mut self.stream {
            MemberStream::Plain(stream) => plain(stream, &mut cx),
            // A write that failed since (the last request's, written at the end of its round)
            // means the connection is broken too.
            MemberStream::Batched(stream) => stream.take_error().is_none() && plain(stream.socket(), &mut cx),
            MemberStream::Tls(stream) => match stream.get_ref().0.poll_read_ready(&mut cx) {
                Poll::Pending => true,
                Poll::Ready(Err(_)) => false,
                // Readable: TLS records that carry no data (a TLS 1.3 session ticket) leave it
                // usable; a close, an alert or unasked data do not.
                Poll::Ready(Ok(())) => {
                    let mut probe = [0u8; 1];
                    let mut probe = ReadBuf::new(&mut probe);
                    Pin::new(&mut **stream).poll_read(&mut cx, &mut probe).is_pending()
                }
            },
        }
    }
}
