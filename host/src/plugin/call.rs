//! One way to call a plugin, for selectors and rule sets alike: [`call`] runs a call on a warm
//! instance under the plugin's call deadline and, when the call fails, says why (a trap, the
//! deadline, the memory cap, a WASI function not granted) with the Wasm backtrace, counts it in
//! `fulcrum_plugin_faults_total{plugin, kind}`, and discards the instance (a trapped instance can
//! never be entered again). The caller logs the fault with the request's id.

use wasmtime::{Store, Trap};

use super::PluginLimits;
use super::store::{self, StoreState};
use crate::balancer::{FaultKind, SelectorFault};

/// A warm plugin instance: its store, its typed exports, and the calls it has served.
pub struct Instance<B> {
    pub store: Store<StoreState>,
    pub bindings: B,
    /// Calls served, for `recycle_after_calls`.
    pub calls: u64,
}

impl<B> Instance<B> {
    pub fn new(store: Store<StoreState>, bindings: B) -> Instance<B> {
        Instance { store, bindings, calls: 0 }
    }
}

/// Run `f` for request `request_id` on `instance`, or on a fresh one from `instantiate` (whose
/// error is a `setup` fault) when there is none, under `limits.call_deadline`.
///
/// Returns the answer, and the instance when it may take another call: not after a fault, nor
/// once it has served `limits.recycle_after` calls.
pub fn call<B, R>(
    plugin: &str,
    limits: &PluginLimits,
    request_id: u64,
    instance: Option<Instance<B>>,
    instantiate: impl FnOnce() -> Result<Instance<B>, String>,
    f: impl FnOnce(&mut Store<StoreState>, &B) -> wasmtime::Result<R>,
) -> (Result<R, SelectorFault>, Option<Instance<B>>) {
    let mut live = match instance {
        Some(live) => live,
        None => match instantiate() {
            Ok(live) => live,
            Err(detail) => {
                return (Err(counted(SelectorFault { plugin: plugin.into(), kind: FaultKind::Setup, detail })), None);
            }
        },
    };
    store::start_call(&mut live.store, limits.call_deadline);
    live.store.data_mut().request_id = request_id;
    match f(&mut live.store, &live.bindings) {
        Ok(answer) => {
            live.calls += 1;
            let worn_out = limits.recycle_after.is_some_and(|n| live.calls >= n);
            (Ok(answer), (!worn_out).then_some(live))
        }
        Err(error) => {
            let memory = live.store.data().limiter.hit;
            drop(live);
            (Err(counted(classify(plugin, &error, memory))), None)
        }
    }
}

fn counted(fault: SelectorFault) -> SelectorFault {
    crate::counters::plugin_fault(&fault.plugin, fault.kind.label());
    fault
}

/// Why a call failed: the memory cap (the limiter saw the guest ask for more, `memory`), the
/// deadline (wasmtime interrupted it at an epoch tick), a WASI function the plugin was not granted
/// (named), or any other trap; the detail carries the Wasm backtrace.
pub fn classify(plugin: &str, error: &wasmtime::Error, memory: bool) -> SelectorFault {
    let kind = if memory {
        FaultKind::Memory
    } else if error.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        FaultKind::Deadline
    } else if let Some(function) = super::ungranted_wasi_call(error) {
        let detail =
            format!("`{function}` (grant it in [plugins.{plugin}] wasi = [...]){}", super::wasm_backtrace(error));
        return SelectorFault { plugin: plugin.to_string(), kind: FaultKind::NotGranted, detail };
    } else {
        FaultKind::Trap
    };
    SelectorFault { plugin: plugin.to_string(), kind, detail: format!("{error:#}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_are_classified_by_cause() {
        let interrupted = wasmtime::Error::new(Trap::Interrupt);
        let unreachable = wasmtime::Error::new(Trap::UnreachableCodeReached);
        let ungranted = wasmtime::Error::new(store::NotGranted("wasi:cli/environment@0.2.0#get-environment".into()));
        let cases: [(&wasmtime::Error, bool, FaultKind); 5] = [
            (&interrupted, false, FaultKind::Deadline),
            (&unreachable, false, FaultKind::Trap),
            (&ungranted, false, FaultKind::NotGranted),
            // The limiter saw the guest ask for more memory: whatever trap followed, it is `memory`.
            (&unreachable, true, FaultKind::Memory),
            (&interrupted, true, FaultKind::Memory),
        ];
        for (error, memory, kind) in cases {
            assert_eq!(classify("p", error, memory).kind, kind, "{error:#} (memory cap hit: {memory})");
        }
        let fault = classify("p", &ungranted, false);
        assert!(fault.detail.starts_with("`wasi:cli/environment@0.2.0#get-environment` (grant it in [plugins.p]"));
    }
}
