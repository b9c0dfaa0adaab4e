//! Responses written to clients, and requests to members, once per round of the worker's event
//! loop, not one by one (plain HTTP/1 and h2c client connections, the records of TLS ones, and
//! plain member connections opened on a worker).
//!
//! Profiled pinned under load, a fifth of Fulcrum's CPU time went to waking the peer after each
//! `send` and `writev` (`sock_def_readable`: the load generator or a member, asleep on the other
//! core, woken with an inter-processor interrupt). Each response written as soon as it is ready
//! wakes the client's process if it went back to sleep since the last one. A client connection
//! served here keeps what hyper writes in a buffer of its own and hands the connection to the
//! worker's [`Flusher`], which writes every waiting buffer at the end of the round: after the
//! tasks that were ready have run, when tokio polls its I/O driver again (every 61 task polls
//! under load, or before it sleeps), so the peer is woken once for the batch.
//!
//! Member connections do the same with request heads (`MemberStream::Batched`, proxy/upstream.rs):
//! the request's task waits for the answer meanwhile. Whether a head reached the member decides
//! whether a failure may send the request again, so a connection that breaks before its head was
//! written takes the head back ([`Coalesced::withdraw`]: it is never written), a write that fails
//! at the end of the round wakes the task with its error ([`Coalesced::take_error`]), and a
//! request body is written through at once ([`Coalesced::poll_write_through`]).
//!
//! What does not change: bytes go out in the order they were written; a buffer past
//! [`MAX_BUFFERED`] is written at once, under the socket's own back-pressure; shutting the write
//! side down writes what is buffered first; a full socket wakes the connection, which writes the
//! rest at the socket's pace; a connection dropped with bytes still buffered has them written by
//! the flusher, or by a task of its own when the socket is full (for at most 30 s).

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::Notify;

/// A connection's buffer is written at once, not at the end of the round, past this many bytes.
pub const MAX_BUFFERED: usize = 64 * 1024;

thread_local! {
    /// The flusher of the worker this thread belongs to ([`bind`]).
    static WORKER_FLUSHER: RefCell<Option<Arc<Flusher>>> = const { RefCell::new(None) };
}

/// Make `flusher` this thread's: the server does, as each thread of a worker's runtime starts, so
/// that member connections opened there ([`crate::proxy`]) are written once per round too.
pub fn bind(flusher: Arc<Flusher>) {
    WORKER_FLUSHER.with(|f| *f.borrow_mut() = Some(flusher));
}

/// The flusher of this thread's worker, if it belongs to one (not on the control runtime, nor in
/// a command or a test that runs no worker).
pub fn current() -> Option<Arc<Flusher>> {
    WORKER_FLUSHER.with(|f| f.borrow().clone())
}

/// The connections of one worker with bytes waiting, and the task that writes them.
#[derive(Default)]
pub struct Flusher {
    waiting: Mutex<Vec<Arc<Shared>>>,
    notify: Notify,
}

impl Flusher {
    /// Write the waiting buffers at the end of each round, for as long as the worker runs.
    pub async fn run(self: Arc<Self>) {
        // Swapped with the list each round, so that neither allocates once warm.
        let mut batch = Vec::new();
        loop {
            self.notify.notified().await;
            // Deferred until tokio next polls its I/O driver: the other ready tasks run first.
            tokio::task::yield_now().await;
            std::mem::swap(&mut batch, &mut *lock(&self.waiting));
            for shared in batch.drain(..) {
                shared.flush_now();
            }
        }
    }

    fn enqueue(&self, shared: Arc<Shared>) {
        lock(&self.waiting).push(shared);
        self.notify.notify_one();
    }
}

/// What a connection and the flusher share.
struct Shared {
    state: Mutex<State>,
}

struct State {
    write: OwnedWriteHalf,
    buffered: Vec<u8>,
    /// In the flusher's list.
    queued: bool,
    /// The connection's task, woken when the flusher could not write everything: its next flush
    /// writes the rest at the socket's pace.
    waker: Option<Waker>,
    /// A write error the flusher met, for the connection's next write or flush.
    error: Option<io::Error>,
    /// The connection was dropped: what the flusher cannot write now, a task of its own writes.
    dropped: bool,
}

/// A buffer larger than this is given back once written, so that an idle connection holds little.
const KEPT_CAPACITY: usize = 8 * 1024;

/// How long bytes left by a dropped connection may wait for a client that does not read.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

impl Shared {
    /// The flusher's turn: write what is buffered without waiting. What the socket does not take
    /// now is written by the connection's own next flush (it is woken), or, once the connection
    /// was dropped, by [`Shared::drain`].
    fn flush_now(self: &Arc<Self>) {
        let mut state = lock(&self.state);
        state.queued = false;
        while !state.buffered.is_empty() {
            match state.write.try_write(&state.buffered) {
                Ok(n) => {
                    state.buffered.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    state.buffered.clear();
                    state.error = Some(e);
                    break;
                }
            }
        }
        if state.buffered.is_empty() {
            // A failed write wakes the connection's task, which may be waiting for an answer
            // that will not come (a member connection): its next write, flush or
            // [`Coalesced::take_error`] reports the error.
            let waker = state.waker.take().filter(|_| state.error.is_some());
            state.give_back();
            drop(state);
            if let Some(waker) = waker {
                waker.wake();
            }
        } else if state.dropped {
            drop(state);
            Arc::clone(self).drain();
        } else if let Some(waker) = state.waker.take() {
            waker.wake();
        }
    }

    /// Write what a dropped connection left, at the socket's pace, in a task of its own.
    fn drain(self: Arc<Self>) {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let written = std::future::poll_fn(|cx| lock(&self.state).poll_drain(cx));
                let _ = tokio::time::timeout(DRAIN_TIMEOUT, written).await;
            });
        }
    }
}

impl State {
    /// Write what is buffered now, waiting for the socket if it must.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(e) = self.error.take() {
            return Poll::Ready(Err(e));
        }
        while !self.buffered.is_empty() {
            let n = std::task::ready!(Pin::new(&mut self.write).poll_write(cx, &self.buffered))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.buffered.drain(..n);
        }
        self.give_back();
        Poll::Ready(Ok(()))
    }

    fn give_back(&mut self) {
        if self.buffered.capacity() > KEPT_CAPACITY {
            self.buffered = Vec::new();
        }
    }
}

/// A client connection whose writes wait for the end of the worker's round.
pub struct Coalesced {
    read: OwnedReadHalf,
    shared: Arc<Shared>,
    flusher: Arc<Flusher>,
}

impl Coalesced {
    pub fn new(stream: TcpStream, flusher: Arc<Flusher>) -> Coalesced {
        let (read, write) = stream.into_split();
        let state = State { write, buffered: Vec::new(), queued: false, waker: None, error: None, dropped: false };
        Coalesced { read, shared: Arc::new(Shared { state: Mutex::new(state) }), flusher }
    }

    /// The socket, for a look at its readiness (a pooled member connection's liveness check).
    pub fn socket(&self) -> &TcpStream {
        self.read.as_ref()
    }

    /// The error the flusher met writing this connection's bytes, if any (taken: reported once).
    pub fn take_error(&self) -> Option<io::Error> {
        lock(&self.shared.state).error.take()
    }

    /// Take back the bytes still waiting for the end of the round, so that they are never
    /// written. Whether there were any: if so, none of what waited reached the peer.
    pub fn withdraw(&self) -> bool {
        let mut state = lock(&self.shared.state);
        let waiting = !state.buffered.is_empty();
        state.buffered.clear();
        waiting
    }

    /// Write what is buffered now, at the socket's pace, instead of at the end of the round: for a
    /// write whose failure must be known before going on (a request body's first bytes).
    pub fn poll_write_through(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        lock(&self.shared.state).poll_drain(cx)
    }

    fn buffer(&self, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let mut state = lock(&self.shared.state);
        if let Some(e) = state.error.take() {
            return Poll::Ready(Err(e));
        }
        if state.buffered.len() + total > MAX_BUFFERED {
            // Too much to hold: what is buffered goes first, then this, at the socket's pace.
            std::task::ready!(state.poll_drain(cx))?;
            return Pin::new(&mut state.write).poll_write_vectored(cx, bufs);
        }
        for buf in bufs {
            state.buffered.extend_from_slice(buf);
        }
        if !state.queued && !state.buffered.is_empty() {
            state.queued = true;
            drop(state);
            self.flusher.enqueue(Arc::clone(&self.shared));
        }
        Poll::Ready(Ok(total))
    }
}

impl std::fmt::Debug for Coalesced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coalesced").field("socket", self.socket()).finish_non_exhaustive()
    }
}

impl AsyncRead for Coalesced {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.read).poll_read(cx, buf)
    }
}

impl AsyncWrite for Coalesced {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.buffer(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.buffer(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    /// Bytes waiting for the flusher count as flushed (it writes them at the end of the round, and
    /// wakes this task if the socket would not take them all). Otherwise what is buffered is
    /// written now.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut state = lock(&self.shared.state);
        if state.queued {
            if let Some(e) = state.error.take() {
                return Poll::Ready(Err(e));
            }
            if !state.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                state.waker = Some(cx.waker().clone());
            }
            return Poll::Ready(Ok(()));
        }
        state.poll_drain(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut state = lock(&self.shared.state);
        std::task::ready!(state.poll_drain(cx))?;
        Pin::new(&mut state.write).poll_shutdown(cx)
    }
}

impl Drop for Coalesced {
    /// Bytes still buffered are written: by the flusher if it has the connection in its list, else
    /// now, at the socket's pace, by a task of their own.
    fn drop(&mut self) {
        let mut state = lock(&self.shared.state);
        state.dropped = true;
        state.waker = None;
        let left = !state.queued && !state.buffered.is_empty();
        drop(state);
        if left {
            Arc::clone(&self.shared).drain();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// A connected pair on loopback: Fulcrum's side coalesced (its flusher running), the client's plain.
    async fn pair() -> (Coalesced, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let flusher = Arc::new(Flusher::default());
        tokio::spawn(Arc::clone(&flusher).run());
        (Coalesced::new(server, flusher), client)
    }

    /// Everything the client reads until the connection's end, within 10 s.
    async fn read_to_end(client: &mut TcpStream) -> Vec<u8> {
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut got)).await.unwrap().unwrap();
        got
    }

    /// Bytes taken back before the end of the round never reach the peer; what is written
    /// after them does.
    #[tokio::test]
    async fn withdrawn_bytes_are_never_written() {
        let (mut server, mut client) = pair().await;
        server.write_all(b"GET /never HTTP/1.1\r\n\r\n").await.unwrap();
        server.flush().await.unwrap();
        assert!(server.withdraw(), "the bytes were waiting for the round");
        assert!(!server.withdraw(), "nothing is left to take back");
        server.write_all(b"after").await.unwrap();
        server.shutdown().await.unwrap();
        drop(server);
        assert_eq!(read_to_end(&mut client).await, b"after");
    }

    /// The peer reset the connection: the flusher's write fails, and the connection's task,
    /// waiting after its flush (a member connection waits for the answer), is woken and finds
    /// the error.
    #[tokio::test]
    async fn a_write_that_fails_at_the_end_of_the_round_wakes_the_connection_with_the_error() {
        let (mut server, client) = pair().await;
        client.set_zero_linger().unwrap();
        drop(client);
        tokio::time::sleep(Duration::from_millis(50)).await;
        server.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        server.flush().await.unwrap();
        let waited = std::future::poll_fn(|cx| match server.take_error() {
            Some(e) => Poll::Ready(e),
            None => {
                // Still queued: this keeps the task's waker with the connection.
                let _ = Pin::new(&mut server).poll_flush(cx);
                Poll::Pending
            }
        });
        // The deadline first: a task that was never woken would otherwise find the error when the
        // timer wakes it.
        let error = tokio::select! {
            biased;
            () = tokio::time::sleep(Duration::from_secs(10)) => panic!("the connection's task was never woken"),
            error = waited => error,
        };
        assert!(
            matches!(error.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe),
            "unexpected error {error:?}"
        );
    }

    /// Writes of every size, each flushed as hyper does, small ones buffered and a large one
    /// written at once past `MAX_BUFFERED`: the client reads them whole and in order.
    #[tokio::test]
    async fn bytes_arrive_in_order_whatever_the_sizes() {
        let (mut server, mut client) = pair().await;
        let sizes = [1, 100, 3, MAX_BUFFERED + 7, 10, 4096, 2 * MAX_BUFFERED, 5];
        let mut sent = Vec::new();
        for (i, size) in sizes.into_iter().enumerate() {
            let chunk: Vec<u8> = (0..size).map(|j| (i * 31 + j) as u8).collect();
            server.write_all(&chunk).await.unwrap();
            server.flush().await.unwrap();
            sent.extend_from_slice(&chunk);
        }
        let reader = tokio::spawn(async move { read_to_end(&mut client).await });
        server.shutdown().await.unwrap();
        drop(server);
        assert!(reader.await.unwrap() == sent, "bytes lost or out of order");
    }

    /// A write waits for the end of the round: the client has nothing until the task yields.
    #[tokio::test]
    async fn a_write_waits_for_the_end_of_the_round() {
        let (mut server, mut client) = pair().await;
        server.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        server.flush().await.unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(client.try_read(&mut buf).map_err(|e| e.kind()), Err(io::ErrorKind::WouldBlock));
        let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf)).await.unwrap().unwrap();
        assert_eq!(&buf[..n], b"HTTP/1.1 200 OK\r\n\r\n");
    }

    /// A connection dropped (no shutdown) with bytes buffered still delivers them, then its end.
    #[tokio::test]
    async fn a_dropped_connection_delivers_what_it_buffered() {
        let (mut server, mut client) = pair().await;
        server.write_all(b"last words").await.unwrap();
        drop(server);
        assert_eq!(read_to_end(&mut client).await, b"last words");
    }

    /// A client that reads late, with far more written than the socket holds, small writes each
    /// flushed: the flusher meets a full socket, the connection writes the rest at the socket's
    /// pace, and the client gets every byte.
    #[tokio::test]
    async fn a_client_that_reads_late_gets_everything() {
        let (mut server, mut client) = pair().await;
        let writer = tokio::spawn(async move {
            let mut sent = Vec::new();
            for i in 0..8 * 1024u32 {
                let chunk = [i as u8; 1000];
                server.write_all(&chunk).await.unwrap();
                server.flush().await.unwrap();
                sent.extend_from_slice(&chunk);
                // The flusher's turn after each write, as between two responses.
                tokio::task::yield_now().await;
            }
            server.shutdown().await.unwrap();
            sent
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let got = read_to_end(&mut client).await;
        let sent = tokio::time::timeout(Duration::from_secs(10), writer).await.unwrap().unwrap();
        assert_eq!(got.len(), sent.len());
        assert!(got == sent, "bytes lost or out of order");
    }
}
