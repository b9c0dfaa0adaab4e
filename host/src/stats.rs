//! Server-wide counters for `/server-status`: requests, bytes, requests in flight, connections,
//! uptime. The request path writes them on every request, so each thread writes a shard (a cache
//! line) of its own and a reader sums them: workers never contend on a counter.

use std::cell::Cell;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

const SHARDS: usize = 64;

#[repr(align(64))]
#[derive(Default)]
struct Shard {
    requests: AtomicU64,
    bytes: AtomicU64,
    busy: AtomicI64,
    connections: AtomicI64,
    connections_total: AtomicU64,
}

struct Stats {
    started: SystemTime,
    since: Instant,
    shards: [Shard; SHARDS],
    next_shard: AtomicUsize,
}

static STATS: LazyLock<Stats> = LazyLock::new(|| Stats {
    started: SystemTime::now(),
    since: Instant::now(),
    shards: std::array::from_fn(|_| Shard::default()),
    next_shard: AtomicUsize::new(0),
});

thread_local! {
    static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

fn shard() -> &'static Shard {
    let stats = &*STATS;
    let index = SHARD.with(|s| {
        if s.get() == usize::MAX {
            s.set(stats.next_shard.fetch_add(1, Ordering::Relaxed) % SHARDS);
        }
        s.get()
    });
    &stats.shards[index]
}

/// Start the clock (the process's start, as server-status reports it).
pub fn start() {
    LazyLock::force(&STATS);
}

/// A request began; [`request_finished`] ends it.
pub fn request_started() {
    shard().busy.fetch_add(1, Ordering::Relaxed);
}

/// A request's response was handed to the client's connection, with `bytes` of body (its
/// `Content-Length`, as Apache's `%b`; 0 when it streams without one).
pub fn request_finished(bytes: u64) {
    let s = shard();
    s.busy.fetch_sub(1, Ordering::Relaxed);
    s.requests.fetch_add(1, Ordering::Relaxed);
    s.bytes.fetch_add(bytes, Ordering::Relaxed);
}

pub fn connection_opened() {
    let s = shard();
    s.connections.fetch_add(1, Ordering::Relaxed);
    s.connections_total.fetch_add(1, Ordering::Relaxed);
}

pub fn connection_closed() {
    shard().connections.fetch_sub(1, Ordering::Relaxed);
}

/// The counters now.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot {
    pub started: SystemTime,
    pub uptime: Duration,
    /// Requests answered.
    pub requests: u64,
    pub bytes: u64,
    /// Requests being served.
    pub busy: u64,
    /// Client connections open, and opened since the start.
    pub connections: u64,
    pub connections_total: u64,
}

pub fn snapshot() -> Snapshot {
    let stats = &*STATS;
    let sum = |f: fn(&Shard) -> i64| stats.shards.iter().map(f).sum::<i64>().max(0) as u64;
    Snapshot {
        started: stats.started,
        uptime: stats.since.elapsed(),
        requests: sum(|s| s.requests.load(Ordering::Relaxed) as i64),
        bytes: sum(|s| s.bytes.load(Ordering::Relaxed) as i64),
        busy: sum(|s| s.busy.load(Ordering::Relaxed)),
        connections: sum(|s| s.connections.load(Ordering::Relaxed)),
        connections_total: sum(|s| s.connections_total.load(Ordering::Relaxed) as i64),
    }
}
