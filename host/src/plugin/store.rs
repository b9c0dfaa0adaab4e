//! What each plugin instance's `Store` carries: its name and current request (for log lines), its
//! memory cap, and an empty WASI context (third-party guests built for wasip2 import WASI even when
//! they never use it): no files, network, environment or stdio. Which WASI interfaces are linked
//! at all is the plugin's grant ([`linker`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable, ResourceType};
use wasmtime::{ResourceLimiter, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::selector_world::fulcrum::plugin::{host, types};
use super::bindings::v0_1::fulcrum::plugin::host as host_v0_1;
use super::bindings::v0_2::fulcrum::plugin::host as host_v0_2;
use super::bindings::v0_3::fulcrum::plugin::host as host_v0_3;
use super::bindings::v0_4::fulcrum::plugin::host as host_v0_4;
use super::wasi_io::{HasOffWorker, OffWorker};
use crate::config::WasiGrants;

pub struct StoreState {
    pub plugin: Arc<str>,
    pub request_id: u64,
    pub limiter: MemoryCap,
    /// The call in progress: how long it may run, and when it was first seen running.
    clock: CallClock,
    wasi: WasiCtx,
    table: ResourceTable,
}

impl StoreState {
    pub fn new(plugin: Arc<str>, memory_bytes: usize) -> StoreState {
        StoreState {
            plugin,
            request_id: 0,
            limiter: MemoryCap { max: memory_bytes, hit: false },
            clock: CallClock { first_tick: None, deadline: Duration::ZERO },
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

/// `fulcrum:plugin/host@0.4.0`, for plugins built against the previous interface: the same.
/// (`host` has the same shapes in every version.)
impl host_v0_4::Host for StoreState {
    fn log(&mut self, level: types::LogLevel, message: String) {
        host::Host::log(self, level, message)
    }
}

/// `fulcrum:plugin/host@0.3.0`: the same.
impl host_v0_3::Host for StoreState {
    fn log(&mut self, level: types::LogLevel, message: String) {
        host::Host::log(self, level, message)
    }
}

/// `fulcrum:plugin/host@0.2.0`, for plugins built against the interface before that: the same.
impl host_v0_2::Host for StoreState {
    fn log(&mut self, level: types::LogLevel, message: String) {
        host::Host::log(self, level, message)
    }
}

/// `fulcrum:plugin/host@0.1.0`, for plugins built against the first interface: the same.
impl host_v0_1::Host for StoreState {
    fn log(&mut self, level: types::LogLevel, message: String) {
        host::Host::log(self, level, message)
    }
}

/// A fresh store for one instance of `plugin`: its memory cap on, the `configure` deadline set.
pub fn new_store(plugin: &Arc<str>, limits: &super::PluginLimits) -> wasmtime::Store<StoreState> {
    let mut store =
        wasmtime::Store::new(super::engine::engine(), StoreState::new(Arc::clone(plugin), limits.memory_bytes));
    store.limiter(|s| &mut s.limiter);
    store.epoch_deadline_callback(|mut store| Ok(store.data_mut().clock.on_tick()));
    start_call(&mut store, limits.configure_deadline);
    store
}

/// Arm the deadline of the call about to be made on `store`.
pub fn start_call(store: &mut wasmtime::Store<StoreState>, deadline: Duration) {
    store.data_mut().clock = CallClock { first_tick: None, deadline };
    // The epoch callback runs at every tick while the call lasts.
    store.set_epoch_deadline(1);
    super::engine::note_call();
}

/// A call's time budget, checked at each epoch tick that passes while the call runs (calls that
/// take microseconds, almost all of them, never see one).
///
/// The clock is read at ticks only, not when a call starts (three reads per proxied request
/// saved): a call is timed from its first tick, which comes less than one tick after it began. So
/// a call is interrupted within two ticks past its deadline (within one when timed from its
/// start), and hands its worker's tasks on from its second tick.
#[derive(Debug, Clone, Copy)]
struct CallClock {
    first_tick: Option<Instant>,
    deadline: Duration,
}

impl CallClock {
    fn on_tick(&mut self) -> UpdateDeadline {
        super::engine::note_call();
        let now = Instant::now();
        let ran = now.duration_since(*self.first_tick.get_or_insert(now));
        if ran >= self.deadline {
            return UpdateDeadline::Interrupt;
        }
        if ran >= super::engine::TICK {
            // A long call: its worker thread's other requests go to another thread meanwhile.
            crate::blocking::keep_runtime_going(super::engine::TICK);
        }
        UpdateDeadline::Continue(1)
    }
}

/// A linker offering what `component` may import: Fulcrum's `host` interface and, when it imports
/// WASI, the granted WASI interfaces (over the empty context) with every other WASI import a
/// function that traps when called. So a language runtime that imports all of WASI loads, and a
/// call it makes without a grant is a fault of that one request.
pub fn linker(
    engine: &wasmtime::Engine,
    component: &Component,
    with_wasi: bool,
    grants: WasiGrants,
) -> wasmtime::Result<Linker<StoreState>> {
    use wasmtime_wasi::cli::{WasiCli, WasiCliView};
    use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView};
    use wasmtime_wasi::p2::bindings::{cli, clocks, random, sync};
    use wasmtime_wasi::random::WasiRandom;

    let mut linker = Linker::new(engine);
    // Every version of the `host` interface: a component imports the one it was built against.
    host::add_to_linker::<StoreState, HasSelf<StoreState>>(&mut linker, |s| s)?;
    host_v0_4::add_to_linker::<StoreState, HasSelf<StoreState>>(&mut linker, |s| s)?;
    host_v0_3::add_to_linker::<StoreState, HasSelf<StoreState>>(&mut linker, |s| s)?;
    host_v0_2::add_to_linker::<StoreState, HasSelf<StoreState>>(&mut linker, |s| s)?;
    host_v0_1::add_to_linker::<StoreState, HasSelf<StoreState>>(&mut linker, |s| s)?;
    if !with_wasi {
        return Ok(linker);
    }
    // Streams and pollables carry nothing unless a granted interface hands one out.
    let l = &mut linker;
    wasmtime_wasi_io::bindings::wasi::io::error::add_to_linker::<StoreState, HasTable>(l, |s| &mut s.table)?;
    sync::io::poll::add_to_linker::<StoreState, HasOffWorker>(l, |s| OffWorker(&mut s.table))?;
    sync::io::streams::add_to_linker::<StoreState, HasOffWorker>(l, |s| OffWorker(&mut s.table))?;
    if grants.clocks {
        clocks::wall_clock::add_to_linker::<StoreState, WasiClocks>(l, StoreState::clocks)?;
        clocks::monotonic_clock::add_to_linker::<StoreState, WasiClocks>(l, StoreState::clocks)?;
    }
    if grants.random {
        random::random::add_to_linker::<StoreState, WasiRandom>(l, |s| s.wasi.random())?;
        random::insecure::add_to_linker::<StoreState, WasiRandom>(l, |s| s.wasi.random())?;
        random::insecure_seed::add_to_linker::<StoreState, WasiRandom>(l, |s| s.wasi.random())?;
    }
    if grants.cli {
        cli::exit::add_to_linker::<StoreState, WasiCli>(l, StoreState::cli)?;
        cli::environment::add_to_linker::<StoreState, WasiCli>(l, StoreState::cli)?;
        cli::stdin::add_to_linker::<StoreState, WasiCli>(l, StoreState::cli)?;
        cli::stdout::add_to_linker::<StoreState, WasiCli>(l, StoreState::cli)?;
        cli::stderr::add_to_linker::<StoreState, WasiCli>(l, StoreState::cli)?;
        cli::terminal_input::add_to_linker::<StoreState, WasiCli>(l, StoreState::cli)?;
        cli::terminal_output::add_to_linker::<StoreState, WasiCli>(l, StoreState::cli)?;
        cli::terminal_stdin::add_to_linker::<StoreState, WasiCli>(l, StoreState::cli)?;
        cli::terminal_stdout::add_to_linker::<StoreState, WasiCli>(l, StoreState::cli)?;
        cli::terminal_stderr::add_to_linker::<StoreState, WasiCli>(l, StoreState::cli)?;
    }
    // Everything else the component imports from WASI traps, naming the function. (Not
    // `define_unknown_imports_as_traps`: it would shadow a granted `@0.2.0` import with a stub,
    // since the linker's real interfaces carry a later 0.2 version.)
    let ty = component.component_type();
    // Resources that WASI interfaces `use` from wasi:io (a clock's `pollable`) are the real ones.
    let io_resources: Vec<ResourceType> = ty
        .imports(engine)
        .filter(|(name, _)| name.starts_with("wasi:io/"))
        .filter_map(|(_, item)| match item.ty {
            ComponentItem::ComponentInstance(instance) => Some(instance),
            _ => None,
        })
        .flat_map(|instance| {
            instance
                .exports(engine)
                .filter_map(|(_, e)| match e.ty {
                    ComponentItem::Resource(r) => Some(r),
                    _ => None,
                })
                .collect::<Vec<_>>()
        })
        .collect();
    for (name, item) in ty.imports(engine) {
        let Some((package, _)) = name.split_once('/') else { continue };
        let granted = match package {
            "wasi:io" => true,
            "wasi:clocks" => grants.clocks,
            "wasi:random" => grants.random,
            "wasi:cli" => grants.cli,
            _ => false,
        };
        let ComponentItem::ComponentInstance(instance) = item.ty else { continue };
        if granted || !package.starts_with("wasi:") {
            continue;
        }
        let mut stubs = linker.instance(name)?;
        for (export, ty) in instance.exports(engine) {
            match ty.ty {
                ComponentItem::ComponentFunc(_) => {
                    let function = format!("{name}#{export}");
                    stubs
                        .func_new(export, move |_, _, _, _| Err(wasmtime::Error::new(NotGranted(function.clone()))))?;
                }
                ComponentItem::Resource(r) if !io_resources.contains(&r) => {
                    stubs.resource(export, ResourceType::host::<()>(), |_, _| Ok(()))?
                }
                _ => {}
            }
        }
    }
    Ok(linker)
}

/// The error of a WASI function the plugin was not granted (its full name): a trap.
#[derive(Debug)]
pub struct NotGranted(pub String);

impl std::fmt::Display for NotGranted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}` is a WASI function this plugin was not granted", self.0)
    }
}

impl std::error::Error for NotGranted {}

struct HasTable;

impl wasmtime::component::HasData for HasTable {
    type Data<'a> = &'a mut ResourceTable;
}
