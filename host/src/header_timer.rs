//! hyper's timer for the client connections' header timeout, with tokio's timers reused.
//!
//! hyper arms a timer each time a connection starts waiting for a request head (on a keep-alive
//! connection, after every response) and drops it once the head is in. With hyper-util's
//! `TokioTimer` that is a new tokio timer per request: an allocation, an insertion into the
//! runtime's timer wheel when it is first polled and a removal when it is dropped, each under
//! the timer driver's lock. Here a dropped timer goes to a short list of this thread's spare
//! timers, still in the wheel, and the next head takes it and moves its deadline: tokio stores a
//! later deadline without touching the wheel (it looks again when the old one comes).
//!
//! A spare timer whose deadline passes before it is taken again wakes the task that polled it
//! last, which finds nothing to do: at most one spurious wake-up per spare timer and timeout
//! period, and none under load, where spare timers are taken again within microseconds. Until
//! then its waker keeps that task's allocation (not the connection, which is closed and freed)
//! from being given back: after a burst of connections that all close, at most [`SPARE`] task
//! allocations per worker for at most `header_timeout`.
//!
//! Each worker has its own runtime and thread, so a thread's spare timers all belong to the
//! runtime that takes them again.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::rt::{Sleep, Timer};

/// Spare timers kept per thread, at most (more are dropped). Under load a spare is taken again
/// within the same round of the event loop, so this many covers as many heads per round.
const SPARE: usize = 128;

thread_local! {
    static SPARES: RefCell<Vec<Pin<Box<tokio::time::Sleep>>>> = const { RefCell::new(Vec::new()) };
}

/// The [`Timer`] for hyper's `header_read_timeout` on the client connections.
#[derive(Debug, Clone, Copy, Default)]
pub struct HeaderTimer;

impl Timer for HeaderTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        Box::pin(Reused(Some(take(deadline))))
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn Sleep>>, new_deadline: Instant) {
        match sleep.as_mut().downcast_mut_pin::<Reused>() {
            Some(mut reused) => match reused.0.as_mut() {
                Some(inner) => inner.as_mut().reset(new_deadline.into()),
                None => reused.0 = Some(take(new_deadline)),
            },
            None => *sleep = self.sleep_until(new_deadline),
        }
    }
}

/// A spare timer moved to `deadline`, or a new one.
fn take(deadline: Instant) -> Pin<Box<tokio::time::Sleep>> {
    let spare = SPARES.try_with(|spares| spares.borrow_mut().pop()).ok().flatten();
    match spare {
        Some(mut timer) => {
            timer.as_mut().reset(deadline.into());
            timer
        }
        None => Box::pin(tokio::time::sleep_until(deadline.into())),
    }
}

/// A tokio timer that goes back to the spares when hyper drops it.
struct Reused(Option<Pin<Box<tokio::time::Sleep>>>);

impl Future for Reused {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.0.as_mut() {
            Some(timer) => timer.as_mut().poll(cx),
            None => Poll::Ready(()),
        }
    }
}

impl Sleep for Reused {}

impl Drop for Reused {
    fn drop(&mut self) {
        if let Some(timer) = self.0.take() {
            // A thread that is ending drops it instead.
            let _ = SPARES.try_with(|spares| {
                let mut spares = spares.borrow_mut();
                if spares.len() < SPARE {
                    spares.push(timer);
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How long `sleep` took to fire (it must, within ten seconds).
    async fn slept(sleep: Pin<Box<dyn Sleep>>) -> Duration {
        let start = Instant::now();
        tokio::time::timeout(Duration::from_secs(10), sleep).await.expect("the timer never fired");
        start.elapsed()
    }

    fn at(millis: u64) -> Instant {
        Instant::now() + Duration::from_millis(millis)
    }

    fn spares() -> usize {
        SPARES.with(|s| s.borrow().len())
    }

    /// A timer fires at its deadline and not before; so does a reset one, and one taken from the
    /// spares (dropped while armed, or after it fired), at its own deadline, later or earlier
    /// than the one it had.
    #[tokio::test]
    async fn timers_fire_at_their_deadlines_also_when_reused() {
        let timer = HeaderTimer;
        assert!(slept(timer.sleep_until(at(30))).await >= Duration::from_millis(30));
        assert_eq!(spares(), 1, "a fired timer is kept");

        let mut sleep = timer.sleep_until(at(10));
        assert_eq!(spares(), 0, "and taken again");
        timer.reset(&mut sleep, at(60));
        assert!(slept(sleep).await >= Duration::from_millis(60));

        // Dropped while armed for 10 ms, taken again for 80: it fires at 80, not at 10.
        drop(timer.sleep_until(at(10)));
        assert_eq!(spares(), 1);
        assert!(slept(timer.sleep_until(at(80))).await >= Duration::from_millis(80));
        // Armed for a minute, taken again for 20 ms: it fires at 20.
        drop(timer.sleep_until(at(60_000)));
        assert!(slept(timer.sleep_until(at(20))).await < Duration::from_secs(10));
    }
}
