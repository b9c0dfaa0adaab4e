//! The wasmtime settings of Fulcrum's plugin engine, in one place for the two that must agree:
//! the engine in the binary (`super::engine`) and `host/build.rs`, which precompiles the embedded
//! plugins with them (compiled code loads only into an engine with the same settings).

/// The plugin engine's configuration: epoch interruption (call deadlines), everything else
/// wasmtime's defaults (Cranelift, the host CPU's features).
pub fn config() -> wasmtime::Config {
    let mut config = wasmtime::Config::new();
    config.epoch_interruption(true);
    config
}
