//! The process-wide wasmtime engine and its epoch ticker.
//!
//! One engine for every plugin: compiled code and type information are shared, and a single
//! ticker thread advances the epoch every [`TICK`]. A call that is still running at a tick gets
//! the store's epoch callback (`store::start_call`), which interrupts it past its deadline.

use std::sync::OnceLock;
use std::time::Duration;

use wasmtime::{Config, Engine};

/// How often the epoch advances: the resolution of call deadlines.
pub const TICK: Duration = Duration::from_millis(1);

/// The shared engine, created (with its ticker thread) on first use.
pub fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut config = Config::new();
        config.epoch_interruption(true);
        let engine = Engine::new(&config).expect("the plugin engine's fixed configuration is valid");
        let ticker = engine.clone();
        std::thread::Builder::new()
            .name("fulcrum-epoch".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(TICK);
                    ticker.increment_epoch();
                }
            })
            .expect("spawning the epoch ticker thread");
        engine
    })
}
