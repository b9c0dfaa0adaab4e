//! Blocking on one of tokio's worker threads without stopping the others' work.
//!
//! A balancer runs its lbmethod under its own lock, and a plugin call runs on the worker thread
//! that polls the request. Both take microseconds, so they run in place, on the fast path. Two
//! things make them long: a plugin call that runs until its deadline (`call_deadline_ms`, up to a
//! minute), and a request waiting for a balancer whose selector is in such a call. There is one
//! worker per core (two on a small machine); if each of them sat in such a call or wait, no
//! connection of the whole proxy would be served. So, once a wait or a call is known to be long,
//! it goes through tokio's `block_in_place`, which hands the worker's queue of tasks to a fresh
//! thread: a lock wait after a short spin ([`wait`]), a plugin call from its first full tick on
//! ([`keep_runtime_going`], called from the plugin module's epoch callback).

use std::sync::mpsc;
use std::time::Duration;

use tokio::runtime::{Handle, RuntimeFlavor};

/// Run `wait`, which blocks, without holding up the tasks of this worker. Off a multi-threaded
/// runtime (a command, a test on a current-thread runtime) it simply runs.
pub fn wait<R>(wait: impl FnOnce() -> R) -> R {
    if multi_thread_handle().is_some() { tokio::task::block_in_place(wait) } else { wait() }
}

/// Called from inside a long computation on a worker thread: make sure the runtime goes on
/// without this thread. The worker's tasks are handed to a fresh thread, and this returns once a
/// task spawned on the runtime has run (some other thread is polling), or after `patience`.
///
/// Without the wait, `block_in_place` around nothing would hand the tasks over and take them
/// straight back before the fresh thread started.
pub fn keep_runtime_going(patience: Duration) {
    let Some(handle) = multi_thread_handle() else { return };
    tokio::task::block_in_place(|| {
        let (ran, probe) = mpsc::sync_channel(1);
        handle.spawn(async move {
            let _ = ran.send(());
        });
        let _ = probe.recv_timeout(patience);
    });
}

/// The runtime of this thread, if it is a multi-threaded one (where `block_in_place` is allowed).
fn multi_thread_handle() -> Option<Handle> {
    Handle::try_current().ok().filter(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use super::*;

    /// Two workers, each stuck in a long call: a task spawned meanwhile still runs, because the
    /// calls handed their workers' queues to fresh threads. (Without that, the task would run only
    /// when the calls gave up, after 10 s, and the calls would report they were not released.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_stuck_workers_do_not_stop_the_runtime() {
        let started = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(AtomicBool::new(false));
        let stuck: Vec<_> = (0..2)
            .map(|_| {
                let (started, release) = (Arc::clone(&started), Arc::clone(&release));
                tokio::spawn(async move {
                    // A plugin call that runs until released, as if until its deadline.
                    started.fetch_add(1, Ordering::AcqRel);
                    keep_runtime_going(Duration::from_millis(50));
                    let give_up = Instant::now() + Duration::from_secs(10);
                    while !release.load(Ordering::Acquire) {
                        if Instant::now() > give_up {
                            return false;
                        }
                        std::hint::spin_loop();
                    }
                    true
                })
            })
            .collect();
        while started.load(Ordering::Acquire) < 2 {
            std::thread::sleep(Duration::from_millis(1));
        }
        tokio::spawn(async {}).await.unwrap();
        release.store(true, Ordering::Release);
        for task in stuck {
            assert!(task.await.unwrap(), "the spawned task ran only after the stuck calls gave up");
        }
    }

    /// Two workers waiting for a lock that a stuck call holds: a task spawned meanwhile still runs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn blocking_waits_do_not_stop_the_runtime() {
        let lock = Arc::new(Mutex::new(()));
        let held = lock.lock().unwrap();
        let started = Arc::new(AtomicUsize::new(0));
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let (lock, started) = (Arc::clone(&lock), Arc::clone(&started));
                tokio::spawn(async move {
                    started.fetch_add(1, Ordering::AcqRel);
                    let _guard = wait(|| lock.lock().unwrap());
                })
            })
            .collect();
        while started.load(Ordering::Acquire) < 2 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let (ran, probe) = mpsc::channel();
        tokio::spawn(async move { ran.send(()).unwrap() });
        let served = probe.recv_timeout(Duration::from_secs(10));
        drop(held);
        for waiter in waiters {
            waiter.await.unwrap();
        }
        assert!(served.is_ok(), "no task ran while two workers waited for the lock");
    }

    #[test]
    fn off_a_runtime_both_simply_run() {
        keep_runtime_going(Duration::from_secs(5));
        assert_eq!(wait(|| 7), 7);
        let current = tokio::runtime::Builder::new_current_thread().build().unwrap();
        current.block_on(async {
            keep_runtime_going(Duration::from_secs(5));
            assert_eq!(wait(|| 7), 7);
        });
    }
}
