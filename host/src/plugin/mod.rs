//! The plugin runtime: the only module that names wasmtime.
//!
//! Plugins are WebAssembly components of the `fulcrum:plugin` WIT package (`wit/`). This module
//! compiles and type-checks each one once (an `InstancePre` per world), keeps one warm instance per
//! use (a selector per balancer), and contains every fault: each call runs under an epoch deadline
//! and a memory cap, and an instance that trapped is dropped and rebuilt from its `InstancePre`
//! before the next call (a trapped instance can never be entered again).
//!
//! The core sees none of this: it talks to [`crate::balancer::MemberSelector`] and asks the
//! [`PluginRegistry`] (a [`crate::balancer::SelectorFactory`]) for one per balancer.

mod bindings;
pub mod cache;
mod call;
mod engine;
mod engine_config;
mod registry;
mod rules;
mod selector;
mod store;
pub mod template;
mod wasi_io;
pub mod watch;

pub use registry::{FailedFile, PluginInfo, PluginRegistry, RegistryOptions, Rescan, Worlds};

use std::time::Duration;

use hyper::http::HeaderName;

use crate::balancer::{RequestFields, RequestInfo};
use bindings::types;

/// Paths of plugins built only for Fulcrum's own tests.
pub mod builtin {
    include!(concat!(env!("OUT_DIR"), "/builtin_plugins.rs"));
}

/// Limits every plugin instance runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PluginLimits {
    /// Wall-clock budget of one per-request call (`select`, `on-request`, ...).
    pub call_deadline: Duration,
    /// Budget of `configure` (interpreted guests initialise their runtime there).
    pub configure_deadline: Duration,
    /// Cap on each instance's linear memory, in bytes.
    pub memory_bytes: usize,
    /// WASI capabilities; calls into any other WASI import trap.
    pub wasi: crate::config::WasiGrants,
    /// Replace an instance after this many calls (a guest runtime that leaks then never reaches
    /// its memory cap), like Apache's MaxConnectionsPerChild or php-fpm's max_requests.
    pub recycle_after: Option<u64>,
}

impl Default for PluginLimits {
    fn default() -> Self {
        // The per-call budgets are the configuration's defaults (`[plugins.NAME]` overrides them).
        let settings = crate::config::PluginSettings::default();
        PluginLimits {
            call_deadline: settings.call_deadline,
            configure_deadline: Duration::from_secs(5),
            memory_bytes: settings.memory_bytes,
            wasi: settings.wasi,
            recycle_after: settings.recycle_after_calls,
        }
    }
}

/// A trap in words: which WASI function it called without a grant, or wasmtime's own account
/// (with the Wasm backtrace).
/// The functions `names` of the component's `fulcrum:plugin/{interface}@{version}` export, found
/// at the version the component was built for (their types are checked when an instance is made).
fn export_functions<const N: usize>(
    pre: &wasmtime::component::InstancePre<store::StoreState>,
    interface: &str,
    version: &str,
    names: [&str; N],
) -> wasmtime::Result<[wasmtime::component::ComponentExportIndex; N]> {
    let interface = format!("{}/{interface}@{version}", registry::WIT_PACKAGE);
    let component = pre.component();
    let instance = component
        .get_export_index(None, &interface)
        .ok_or_else(|| wasmtime::format_err!("no exported instance named `{interface}`"))?;
    let mut found = Vec::with_capacity(N);
    for name in names {
        found.push(
            component
                .get_export_index(Some(&instance), name)
                .ok_or_else(|| wasmtime::format_err!("`{interface}` does not export `{name}`"))?,
        );
    }
    Ok(found.try_into().unwrap_or_else(|_| unreachable!("one index per name")))
}

fn trap_detail(plugin: &str, error: &wasmtime::Error) -> String {
    match ungranted_wasi_call(error) {
        Some(function) => {
            format!(
                "called `{function}`, a WASI function it was not granted (grant it in [plugins.{plugin}] wasi = \
                 [...]){}",
                wasm_backtrace(error)
            )
        }
        None => format!("{error:#}"),
    }
}

/// `; wasm backtrace: ...` when the error carries one (empty otherwise).
fn wasm_backtrace(error: &wasmtime::Error) -> String {
    error.downcast_ref::<wasmtime::WasmBacktrace>().map_or(String::new(), |bt| format!("; {bt}"))
}

/// The WASI function a trap came from when it is one the plugin was not granted (the linker
/// defines those as functions that fail with [`store::NotGranted`]).
fn ungranted_wasi_call(error: &wasmtime::Error) -> Option<String> {
    error.chain().find_map(|cause| cause.downcast_ref::<store::NotGranted>().map(|n| n.0.clone()))
}

/// The request as a plugin declared it wants it: only the fields and headers it named.
fn request_view(fields: RequestFields, header_names: &[HeaderName], request: &RequestInfo<'_>) -> types::RequestView {
    let text = |wanted: bool, s: &str| if wanted { s.to_string() } else { String::new() };
    let mut headers = Vec::new();
    for name in header_names {
        for value in request.headers.get_all(name) {
            headers.push((name.as_str().to_string(), String::from_utf8_lossy(value.as_bytes()).into_owned()));
        }
    }
    types::RequestView {
        method: text(fields.method, request.method.as_str()),
        path: text(fields.path, request.uri.path()),
        query: text(fields.query, request.uri.query().unwrap_or("")),
        client_addr: if fields.client_addr { request.client.as_str().to_string() } else { String::new() },
        host: text(fields.host, request.host),
        headers,
    }
}

fn convert_fields(f: types::RequestFields) -> RequestFields {
    RequestFields {
        method: f.contains(types::RequestFields::METHOD),
        path: f.contains(types::RequestFields::PATH),
        query: f.contains(types::RequestFields::QUERY),
        client_addr: f.contains(types::RequestFields::CLIENT_ADDR),
        host: f.contains(types::RequestFields::HOST),
    }
}

/// Declared header names, lower-cased and deduplicated; an invalid name is an error naming it.
fn header_names(names: &[String]) -> Result<Vec<HeaderName>, String> {
    let mut out: Vec<HeaderName> = Vec::with_capacity(names.len());
    for h in names {
        let name = HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes())
            .map_err(|_| format!("`{h}`, which is not a header name"))?;
        if !out.contains(&name) {
            out.push(name);
        }
    }
    Ok(out)
}
