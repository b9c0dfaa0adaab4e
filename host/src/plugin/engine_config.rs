//! The wasmtime settings of Fulcrum's plugin engine, in one place for the two that must agree:
//! the engine in the binary (`super::engine`) and `host/build.rs`, which precompiles the embedded
//! plugins with them (compiled code loads only into an engine with the same settings).

/// The plugin engine's configuration: epoch interruption (call deadlines), everything else
/// wasmtime's defaults (Cranelift, the host CPU's features).
///
/// `FULCRUM_PERFMAP=1` in the environment also writes `/tmp/perf-<pid>.map`, so that `perf report`
/// names the plugins' compiled functions instead of `[JIT]` addresses (docs/performance.md). It
/// changes no compiled code, so precompiled plugins still load.
pub fn config() -> wasmtime::Config {
    let mut config = wasmtime::Config::new();
    config.epoch_interruption(true);
    if std::env::var_os("FULCRUM_PERFMAP").is_some_and(|v| v == "1") {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    config
}
