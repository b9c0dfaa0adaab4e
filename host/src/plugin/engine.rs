//! The process-wide wasmtime engine and its epoch ticker.
//!
//! One engine for every plugin: compiled code and type information are shared, and a single
//! ticker thread advances the epoch every [`TICK`]. A call that is still running at a tick gets
//! the store's epoch callback (`store::start_call`), which interrupts it past its deadline.
//!
//! An idle proxy should not wake a thousand times a second: after a second without plugin calls
//! the ticker parks, and the next call wakes it ([`note_call`], a store and a load on the call's
//! path). A call in progress keeps it ticking (its epoch callback notes itself at every tick), so
//! a call that runs long is still interrupted at its deadline.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::Thread;
use std::time::Duration;

use wasmtime::Engine;

/// How often the epoch advances: the resolution of call deadlines.
pub const TICK: Duration = Duration::from_millis(1);

/// Ticks without a call after which the ticker parks.
const IDLE_TICKS: u32 = 1000;

/// Set by every call and by every tick inside one; taken by the ticker at each tick.
static ACTIVE: AtomicBool = AtomicBool::new(true);
/// The ticker is parked (or about to be): a call must wake it.
static PARKED: AtomicBool = AtomicBool::new(false);
static TICKER: OnceLock<Thread> = OnceLock::new();

/// A plugin call is starting or running: make sure the epoch advances while it does.
///
/// `SeqCst` on both sides (here: store `ACTIVE`, load `PARKED`; the ticker: store `PARKED`, load
/// `ACTIVE`) means that either the ticker sees the call and stays awake, or the call sees the
/// ticker parking and wakes it (an unpark before the park is not lost).
pub fn note_call() {
    ACTIVE.store(true, Ordering::SeqCst);
    if PARKED.load(Ordering::SeqCst)
        && let Some(ticker) = TICKER.get()
    {
        ticker.unpark();
    }
}

/// The shared engine, created (with its ticker thread) on first use.
pub fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let engine =
            Engine::new(&super::engine_config::config()).expect("the plugin engine's fixed configuration is valid");
        let ticker = engine.clone();
        let thread = std::thread::Builder::new()
            .name("fulcrum-epoch".into())
            .spawn(move || {
                let mut idle = 0;
                loop {
                    std::thread::sleep(TICK);
                    ticker.increment_epoch();
                    idle = if ACTIVE.swap(false, Ordering::SeqCst) { 0 } else { idle + 1 };
                    if idle < IDLE_TICKS {
                        continue;
                    }
                    PARKED.store(true, Ordering::SeqCst);
                    if !ACTIVE.load(Ordering::SeqCst) {
                        std::thread::park();
                    }
                    PARKED.store(false, Ordering::SeqCst);
                    idle = 0;
                }
            })
            .expect("spawning the epoch ticker thread");
        let _ = TICKER.set(thread.thread().clone());
        engine
    })
}
