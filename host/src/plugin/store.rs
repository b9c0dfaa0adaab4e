//! What each plugin instance's `Store` carries: its name and current request (for log lines), its
//! memory cap, and an empty WASI context (third-party guests built for wasip2 import WASI even when
//! they never use it; nothing is granted: no files, network, environment or stdio).

use std::sync::Arc;

use wasmtime::ResourceLimiter;
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::selector_world::fulcrum::plugin::{host, types};

pub struct StoreState {
    pub plugin: Arc<str>,
    pub request_id: u64,
    pub limiter: MemoryCap,
    wasi: WasiCtx,
    table: ResourceTable,
}

impl StoreState {
    pub fn new(plugin: Arc<str>, memory_bytes: usize) -> StoreState {
        StoreState {
            plugin,
            request_id: 0,
            limiter: MemoryCap { max: memory_bytes, hit: false },
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
        }
    }
}

/// Caps linear memory and remembers that a guest hit the cap, to name the fault.
pub struct MemoryCap {
    pub max: usize,
    pub hit: bool,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.max {
            self.hit = true;
            return Err(wasmtime::format_err!("memory limit of {} bytes reached (wanted {desired})", self.max));
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl types::Host for StoreState {}

impl host::Host for StoreState {
    fn log(&mut self, level: types::LogLevel, message: String) {
        let (plugin, request) = (&*self.plugin, self.request_id);
        match level {
            types::LogLevel::Trace => tracing::trace!(plugin, request, "{message}"),
            types::LogLevel::Debug => tracing::debug!(plugin, request, "{message}"),
            types::LogLevel::Info => tracing::info!(plugin, request, "{message}"),
            types::LogLevel::Warn => tracing::warn!(plugin, request, "{message}"),
            types::LogLevel::Error => tracing::error!(plugin, request, "{message}"),
        }
    }
}

/// A fresh store for one instance of `plugin`: its memory cap on, the `configure` deadline set.
pub fn new_store(plugin: &Arc<str>, limits: &super::PluginLimits) -> wasmtime::Store<StoreState> {
    let mut store =
        wasmtime::Store::new(super::engine::engine(), StoreState::new(Arc::clone(plugin), limits.memory_bytes));
    store.limiter(|s| &mut s.limiter);
    store.set_epoch_deadline(super::engine::ticks(limits.configure_deadline));
    store
}

/// A linker offering what plugins may import: Fulcrum's `host` interface, plus empty WASI when the
/// component imports any `wasi:` interface.
pub fn linker(engine: &wasmtime::Engine, with_wasi: bool) -> wasmtime::Result<Linker<StoreState>> {
    let mut linker = Linker::new(engine);
    host::add_to_linker::<StoreState, HasSelf<StoreState>>(&mut linker, |s| s)?;
    if with_wasi {
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    }
    Ok(linker)
}
