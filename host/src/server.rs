//! Serving: the listening sockets, the workers that accept and serve connections, the admin
//! listener. What they serve is the proxy in force ([`crate::runtime`]).
//!
//! # Stopping
//!
//! SIGTERM and SIGINT stop Fulcrum the way Apache's `graceful-stop`, nginx's `quit` and HAProxy's
//! soft-stop do, so that a restart or a deploy loses no request: [`Workers::shutdown`] stops
//! accepting at once, lets every request in flight finish and write its whole response, closes
//! idle keep-alive connections, and returns when the last connection is gone or when
//! `shutdown_timeout` has passed, whichever is first (past it, what is still open is cut).
//!
//! New connections are refused, not left in the listen backlog for a process that will never
//! accept them: `shutdown(SHUT_RD)` on a listening socket takes it out of LISTEN on Linux for
//! every descriptor of it (the workers each hold one), so a client's SYN gets a reset and it can
//! try another server at once; the descriptors close as the accept loops end. One `watch`
//! channel tells every accept loop and every connection that shutdown began (hyper's
//! `graceful_shutdown` on each connection), and a second one counts the connections still open:
//! the last one out wakes the waiter. A worker's runtime lives until every connection is done,
//! since dropping it would cut the connections it drives.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::sync::watch;

use crate::Error;
use crate::balancer::ClientAddr;
use crate::proxy::SharedProxy;

/// A listening socket as tokio binds one (`SO_REUSEADDR`, a backlog of 1024), made before any
/// runtime exists so that every worker can watch it.
pub(crate) fn listen(addr: &SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(*addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&(*addr).into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Serve the admin listener ([`crate::admin`]) until the process ends.
pub async fn serve_admin(listener: TcpListener, proxy: SharedProxy) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!("admin accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let proxy = Arc::clone(&proxy);
        tokio::spawn(async move {
            let service = service_fn(move |request| crate::admin::handle(request, proxy.load_full()));
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(20))
                .half_close(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// How many workers serve requests: `FULCRUM_WORKERS` (or tokio's own `TOKIO_WORKER_THREADS`)
/// when set, else one per core.
pub fn worker_count() -> usize {
    ["FULCRUM_WORKERS", "TOKIO_WORKER_THREADS"]
        .iter()
        .find_map(|var| std::env::var(var).ok()?.trim().parse::<usize>().ok().filter(|&n| n > 0))
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZero::get))
}

/// Serve `listeners` on `workers` threads, each with a runtime of its own (one worker thread, so
/// that a long plugin call can still hand its other tasks on with `block_in_place`); the
/// [`Workers`] handle stops them ([`Workers::shutdown`]).
///
/// A connection lives on the worker that accepted it from start to end, and that worker also
/// drives the member connections its requests use ([`crate::proxy::bind_worker`]): no request
/// crosses threads, as in nginx's and HAProxy's one event loop per core. Every worker watches the
/// same listening sockets (no `SO_REUSEPORT`, so a second Fulcrum on the same port still fails to
/// start instead of sharing it); the one that wakes first takes the connection.
pub fn start_workers(
    listeners: Vec<std::net::TcpListener>,
    proxy: &SharedProxy,
    workers: usize,
) -> Result<Workers, Error> {
    // One bound on client connections for all listeners and workers: past it, connections wait
    // in the kernel's listen backlog instead of costing sockets, memory and members' connections.
    let permits = Arc::new(Semaphore::new(proxy.load().limits().max_connections));
    let (stop, _) = watch::channel(false);
    let (open, _) = watch::channel(0);
    // Each worker thread holds a sender until its runtime is gone; `recv` answers `None` after the last.
    let (ended, workers_ended) = tokio::sync::mpsc::channel::<()>(1);
    let mut to_workers = Vec::new();
    for worker in 0..workers.max(1) {
        let (sockets, mut new_sockets) = tokio::sync::mpsc::unbounded_channel::<Arc<Listening>>();
        to_workers.push(sockets);
        // Writes to this worker's clients and members, once per round (`crate::coalesce`).
        let flusher = Arc::new(crate::coalesce::Flusher::default());
        let bound = Arc::clone(&flusher);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(format!("fulcrum-w{worker}"))
            .on_thread_start(move || {
                crate::proxy::bind_worker(worker);
                crate::coalesce::bind(Arc::clone(&bound));
            })
            .enable_all()
            .build()
            .map_err(|e| Error::msg(format!("cannot start worker {worker}: {e}")))?;
        let (proxy, permits) = (Arc::clone(proxy), Arc::clone(&permits));
        let (mut stopping_rx, open, ended) = (stop.subscribe(), open.clone(), ended.clone());
        std::thread::Builder::new()
            .name(format!("fulcrum-w{worker}-main"))
            .spawn(move || {
                runtime.block_on(async move {
                    let mut tasks = tokio::task::JoinSet::new();
                    tokio::spawn(Arc::clone(&flusher).run());
                    // Listening sockets come over the channel: those of the start, then those a
                    // configuration reload opens. The worker accepts until shutdown.
                    loop {
                        tokio::select! {
                            () = stopping(&mut stopping_rx) => break,
                            socket = new_sockets.recv() => {
                                let Some(socket) = socket else { break };
                                let listener = socket
                                    .socket
                                    .try_clone()
                                    .and_then(|s| s.set_nonblocking(true).map(|()| s))
                                    .and_then(TcpListener::from_std);
                                match listener {
                                    Ok(listener) => {
                                        let (proxy, permits) = (Arc::clone(&proxy), Arc::clone(&permits));
                                        let signals = (stopping_rx.clone(), socket.closed.subscribe());
                                        let configured = (socket.addr, socket.slot);
                                        let flusher = Arc::clone(&flusher);
                                        tasks.spawn(accept_loop(listener, configured, proxy, permits, signals, open.clone(), flusher));
                                    }
                                    Err(e) => tracing::error!("worker {worker}: cannot watch {}: {e}", socket.addr),
                                }
                            }
                            Some(_) = tasks.join_next() => {}
                        }
                    }
                    while tasks.join_next().await.is_some() {}
                    // Accepting has stopped: the connections still open run on this runtime, so
                    // it lives until they are done (the shutdown deadline is the caller's).
                    let _ = open.subscribe().wait_for(|&n| n == 0).await;
                });
                drop(runtime);
                drop(ended);
            })
            .map_err(|e| Error::msg(format!("cannot start worker {worker}: {e}")))?;
    }
    let configured = proxy.load().config().listen.clone();
    let set = Arc::new(ListenerSet { to_workers, open: std::sync::Mutex::new(Vec::new()) });
    let first: Vec<Listening> = listeners
        .into_iter()
        .enumerate()
        .map(|(i, socket)| {
            let addr =
                configured.get(i).copied().or_else(|| socket.local_addr().ok()).unwrap_or(([0, 0, 0, 0], 0).into());
            let slot = configured[..i.min(configured.len())].iter().filter(|&&a| a == addr).count();
            Listening::new(addr, slot, socket)
        })
        .collect();
    set.change(first, &[]);
    Ok(Workers { listeners: set, stop, open, workers_ended })
}

/// The running workers ([`start_workers`]). [`Workers::shutdown`] stops them gracefully; dropped
/// without it, they serve until the process ends.
#[derive(Debug)]
#[must_use = "dropped, the workers serve until the process ends: call Workers::shutdown to stop them"]
pub struct Workers {
    /// The listening sockets, which a reload may change ([`Workers::listeners`]).
    listeners: Arc<ListenerSet>,
    /// Becomes `true` when shutdown begins: the accept loops end, and every connection finishes
    /// its request in flight and closes.
    stop: watch::Sender<bool>,
    /// How many client connections are open ([`Open`]).
    open: watch::Sender<usize>,
    /// Closed when every worker's runtime is gone.
    workers_ended: tokio::sync::mpsc::Receiver<()>,
}

/// One listening socket, watched by every worker.
#[derive(Debug)]
struct Listening {
    /// The address as configured (port 0 stays 0: the port the system chose is the socket's).
    addr: SocketAddr,
    /// Which of the configured entries of `addr` it is (only port 0 repeats): its settings are
    /// [`crate::config::Config::listener`]`(addr, slot)`.
    slot: usize,
    socket: std::net::TcpListener,
    /// Becomes `true` when a reload closes it: its accept loops end.
    closed: watch::Sender<bool>,
}

impl Listening {
    fn new(addr: SocketAddr, slot: usize, socket: std::net::TcpListener) -> Listening {
        Listening { addr, slot, socket, closed: watch::channel(false).0 }
    }

    /// Stop taking connections on it: its accept loops end, and new connections are refused at
    /// once ([`Workers::shutdown`] says why `SHUT_RD`).
    fn close(&self) {
        self.closed.send_replace(true);
        if let Err(e) = socket2::SockRef::from(&self.socket).shutdown(std::net::Shutdown::Read) {
            tracing::debug!("shutdown(SHUT_RD) of {}: {e}", self.addr);
        }
    }
}

/// The listening sockets the workers accept on, changed by a configuration reload: new
/// addresses are bound before the new configuration goes in force (one that cannot be bound
/// refuses the reload), addresses no longer configured stop accepting after it; connections
/// already open on them finish as they would.
#[derive(Debug)]
pub struct ListenerSet {
    to_workers: Vec<tokio::sync::mpsc::UnboundedSender<Arc<Listening>>>,
    open: std::sync::Mutex<Vec<Arc<Listening>>>,
}

/// Sockets bound for a reload, not yet accepted on ([`ListenerSet::bind`]).
#[derive(Debug)]
pub struct Bound(Vec<Listening>);

impl Bound {
    /// The addresses the system gave them (a configured port 0 is a real port here).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.0.iter().filter_map(|l| l.socket.local_addr().ok()).collect()
    }
}

impl ListenerSet {
    /// The configured addresses listened on.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter().map(|l| l.addr).collect()
    }

    /// Bind the addresses of `wanted` not listened on yet. Errors name the address.
    pub fn bind(&self, wanted: &[SocketAddr]) -> Result<Bound, Error> {
        let have = self.addresses();
        let mut bound = Vec::new();
        for addr in wanted.iter().filter(|a| !have.contains(a)) {
            let socket = listen(addr).map_err(|e| Error::msg(format!("cannot listen on {addr}: {e}")))?;
            bound.push(Listening::new(*addr, 0, socket));
        }
        Ok(Bound(bound))
    }

    /// Start accepting on `bound` and stop on every address not in `keep` (a reload's `listen`).
    pub fn apply(&self, bound: Bound, keep: &[SocketAddr]) {
        let remove: Vec<SocketAddr> = self.addresses().into_iter().filter(|a| !keep.contains(a)).collect();
        self.change(bound.0, &remove);
    }

    fn change(&self, add: Vec<Listening>, remove: &[SocketAddr]) {
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for listening in add {
            let listening = Arc::new(listening);
            for worker in &self.to_workers {
                let _ = worker.send(Arc::clone(&listening));
            }
            if let Ok(local) = listening.socket.local_addr() {
                tracing::debug!("listening on {local}");
            }
            open.push(listening);
        }
        open.retain(|l| {
            let gone = remove.contains(&l.addr);
            if gone {
                l.close();
                tracing::info!("no longer listening on {}", l.addr);
            }
            !gone
        });
    }

    /// Close them all (shutdown).
    fn close_all(&self) {
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for l in open.drain(..) {
            l.close();
        }
    }
}

impl Workers {
    /// The listening sockets, for a configuration reload to change.
    pub fn listeners(&self) -> Arc<ListenerSet> {
        Arc::clone(&self.listeners)
    }

    /// Stop gracefully: refuse new connections at once, let the requests in flight finish and
    /// close every connection after its response, within `timeout`. Returns how many connections
    /// were still open at the deadline (they are cut when the process exits); 0 when every one
    /// finished. Logs at info what it waits for and when it is done, at warn what it cuts.
    pub async fn shutdown(self, timeout: Duration) -> usize {
        let Workers { listeners, stop, open, mut workers_ended } = self;
        let connections = *open.borrow();
        // First the signal, then the sockets: an accept loop that sees its socket fail knows why.
        // Elsewhere than Linux a socket may stay in LISTEN until its last descriptor closes,
        // when the accept loops end.
        stop.send_replace(true);
        listeners.close_all();
        // Said once new connections are refused.
        tracing::info!("shutting down: {connections} connections open, waiting up to {}s", timeout.as_secs());
        let mut last_out = open.subscribe();
        let finished = async move {
            let _ = last_out.wait_for(|&n| n == 0).await;
            // The workers' runtimes end after the last connection, closing the members'
            // connections; one accepted just before the signal may still be on one of them.
            while workers_ended.recv().await.is_some() {}
        };
        let _ = tokio::time::timeout(timeout, finished).await;
        let cut = *open.borrow();
        if cut == 0 {
            tracing::info!("shut down: every connection finished");
        } else {
            tracing::warn!(
                "shutdown_timeout ({}s) has passed: exiting, cutting {cut} connections still open",
                timeout.as_secs()
            );
        }
        cut
    }
}

/// A client connection, counted from its accept to its close.
struct Open(watch::Sender<usize>);

impl Open {
    fn new(open: &watch::Sender<usize>) -> Open {
        open.send_modify(|n| *n += 1);
        crate::stats::connection_opened();
        Open(open.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        crate::stats::connection_closed();
        // Only the last one out wakes anyone.
        self.0.send_if_modified(|n| {
            *n -= 1;
            *n == 0
        });
    }
}

/// Resolves once shutdown has begun; never when the [`Workers`] handle was dropped without it.
pub(crate) async fn stopping(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|&stopping| stopping).await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    (configured, slot): (SocketAddr, usize),
    proxy: SharedProxy,
    permits: Arc<Semaphore>,
    (mut stop, mut closed): (watch::Receiver<bool>, watch::Receiver<bool>),
    open: watch::Sender<usize>,
    flusher: Arc<crate::coalesce::Flusher>,
) {
    let local = listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    // Bound at start: a reload keeps `[limits]` until the next start.
    let limits = *proxy.load().limits();
    let mut http = http1::Builder::new();
    http.timer(crate::header_timer::HeaderTimer)
        // mod_reqtimeout's header timeout; hyper also closes a keep-alive connection idle for as long.
        .header_read_timeout(limits.header_timeout)
        // Room for what `[limits]` allows, so that Fulcrum answers each limit with Apache's
        // status; hyper answers 431 only past twice the field count.
        .max_headers(limits.request_fields.saturating_mul(2).max(limits.request_fields + 1))
        .max_buf_size(limits.head_buffer())
        // A client that half-closes after its request still gets its answer, as from Apache; and
        // hyper does not read the socket (into a fresh buffer) while each request is in flight
        // to find out whether the client is still there.
        .half_close(true)
        .keep_alive(true);
    let http2 = crate::protocols::http2_builder();
    let mut saturated = false;
    loop {
        let next = async {
            let permit = match Arc::clone(&permits).try_acquire_owned() {
                Ok(permit) => {
                    saturated = false;
                    permit
                }
                Err(_) => {
                    if !saturated {
                        tracing::warn!(
                            "{} client connections open (limits.max_connections): new ones wait",
                            limits.max_connections
                        );
                        saturated = true;
                    }
                    Arc::clone(&permits).acquire_owned().await.ok()?
                }
            };
            Some((permit, listener.accept().await))
        };
        let (permit, accepted) = tokio::select! {
            biased;
            () = stopping(&mut stop) => return,
            // A reload closed this socket: connections already open go on.
            () = stopping(&mut closed) => return,
            next = next => match next {
                Some(next) => next,
                None => return,
            },
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            // Its socket was shut down.
            Err(_) if *stop.borrow() || *closed.borrow() => return,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!("accept on {local} failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let open = Open::new(&open);
        let proxy = Arc::clone(&proxy);
        let http = http.clone();
        let mut stop = stop.clone();
        let flusher = Arc::clone(&flusher);
        // TLS and h2c listeners (`crate::protocols`); settings of the configuration in force, so
        // that a reload's certificates apply from the next connection on.
        let kind = proxy.load().config().listener(configured, slot).and_then(crate::protocols::Kind::of);
        if let Some(kind) = kind {
            let serve = crate::protocols::Serve {
                kind,
                proxy,
                http1: http,
                http2: http2.clone(),
                handshake_timeout: limits.header_timeout,
                stop,
                flusher,
            };
            tokio::spawn(async move {
                let _held = (permit, open);
                crate::protocols::serve(stream, peer, local, serve).await;
            });
            continue;
        }
        tokio::spawn(async move {
            let _held = (permit, open);
            let client = Arc::new(ClientAddr::new(peer.ip()));
            // The proxy in force when each request arrives: a reload applies from the next request
            // on, also on connections already open.
            let service = service_fn(move |request| proxy.load_full().handle(request, Arc::clone(&client), local));
            // `with_upgrades`: a 101 answer hands the connection to a tunnel (proxy::tunnel).
            let stream = crate::coalesce::Coalesced::new(stream, flusher);
            let mut connection = std::pin::pin!(http.serve_connection(TokioIo::new(stream), service).with_upgrades());
            let served = tokio::select! {
                served = connection.as_mut() => served,
                // hyper finishes the request in flight (its whole response is written) and then
                // closes instead of waiting for another; an idle connection closes at once.
                () = stopping(&mut stop) => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = served {
                tracing::debug!(client = %peer, "connection ended: {e}");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::io::{ErrorKind, Read};

    /// What [`super::Workers::shutdown`] relies on, on Linux: `shutdown(SHUT_RD)` through one
    /// descriptor takes the listening socket out of LISTEN for all of them (each worker holds its
    /// own), so a new connection is refused at once, and one waiting in the backlog is reset,
    /// instead of waiting for an accept that will never come.
    #[cfg(target_os = "linux")]
    #[test]
    fn shut_rd_refuses_connections_on_every_descriptor() {
        let listener = super::listen(&"127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let worker_copy = listener.try_clone().unwrap();
        let mut waiting = std::net::TcpStream::connect(addr).expect("a connection into the backlog");
        socket2::SockRef::from(&listener).shutdown(std::net::Shutdown::Read).unwrap();
        let refused = std::net::TcpStream::connect(addr).expect_err("connected after SHUT_RD");
        assert_eq!(refused.kind(), ErrorKind::ConnectionRefused, "{refused}");
        waiting.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        let reset = waiting.read(&mut [0u8; 1]).expect_err("the backlog's connection is still open");
        assert_eq!(reset.kind(), ErrorKind::ConnectionReset, "{reset}");
        drop((listener, worker_copy));
    }
}
