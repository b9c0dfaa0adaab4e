//! Serving: the listening sockets, the workers that accept and serve connections, the admin
//! listener. What they serve is the proxy in force ([`crate::runtime`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

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
/// that a long plugin call can still hand its other tasks on with `block_in_place`).
///
/// A connection lives on the worker that accepted it from start to end, and that worker also
/// drives the member connections its requests use ([`crate::proxy::bind_worker`]): no request
/// crosses threads, as in nginx's and HAProxy's one event loop per core. Every worker watches the
/// same listening sockets (no `SO_REUSEPORT`, so a second Fulcrum on the same port still fails to
/// start instead of sharing it); the one that wakes first takes the connection.
pub fn start_workers(listeners: &[std::net::TcpListener], proxy: &SharedProxy, workers: usize) -> Result<(), Error> {
    // One bound on client connections for all listeners and workers: past it, connections wait
    // in the kernel's listen backlog instead of costing sockets, memory and members' connections.
    let permits = Arc::new(Semaphore::new(proxy.load().limits().max_connections));
    for worker in 0..workers.max(1) {
        let sockets = listeners
            .iter()
            .map(|l| l.try_clone().and_then(|s| s.set_nonblocking(true).map(|()| s)))
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| Error::msg(format!("cannot share the listening sockets with worker {worker}: {e}")))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(format!("fulcrum-w{worker}"))
            .on_thread_start(move || crate::proxy::bind_worker(worker))
            .enable_all()
            .build()
            .map_err(|e| Error::msg(format!("cannot start worker {worker}: {e}")))?;
        let (proxy, permits) = (Arc::clone(proxy), Arc::clone(&permits));
        std::thread::Builder::new()
            .name(format!("fulcrum-w{worker}-main"))
            .spawn(move || {
                runtime.block_on(async move {
                    let mut tasks = tokio::task::JoinSet::new();
                    for socket in sockets {
                        match TcpListener::from_std(socket) {
                            Ok(listener) => {
                                tasks.spawn(accept_loop(listener, Arc::clone(&proxy), Arc::clone(&permits)));
                            }
                            Err(e) => tracing::error!("worker {worker}: cannot watch a listening socket: {e}"),
                        }
                    }
                    while tasks.join_next().await.is_some() {}
                });
            })
            .map_err(|e| Error::msg(format!("cannot start worker {worker}: {e}")))?;
    }
    Ok(())
}

async fn accept_loop(listener: TcpListener, proxy: SharedProxy, permits: Arc<Semaphore>) {
    let local = listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    // Bound at start: a reload keeps `[limits]` until the next start.
    let limits = *proxy.load().limits();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        // mod_reqtimeout's header timeout; hyper also closes a keep-alive connection idle for as long.
        .header_read_timeout(limits.header_timeout)
        // Room for what `[limits]` allows, so that Fulcrum answers each limit with Apache's
        // status; hyper answers 431 only past twice the field count.
        .max_headers(limits.request_fields.saturating_mul(2).max(limits.request_fields + 1))
        .max_buf_size(limits.head_buffer())
        .keep_alive(true);
    let mut saturated = false;
    loop {
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
                match Arc::clone(&permits).acquire_owned().await {
                    Ok(permit) => permit,
                    Err(_) => return,
                }
            }
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!("accept on {local} failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let proxy = Arc::clone(&proxy);
        let http = http.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let client = Arc::new(ClientAddr::new(peer.ip()));
            // The proxy in force when each request arrives: a reload applies from the next request
            // on, also on connections already open.
            let service = service_fn(move |request| proxy.load_full().handle(request, Arc::clone(&client), local));
            let served = http.serve_connection(TokioIo::new(stream), service).await;
            if let Err(e) = served {
                tracing::debug!(client = %peer, "connection ended: {e}");
            }
        });
    }
}
