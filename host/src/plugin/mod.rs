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
mod engine;
mod registry;
mod selector;
mod store;

pub use registry::{PluginInfo, PluginRegistry, Worlds};

use std::time::Duration;

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
}

impl Default for PluginLimits {
    fn default() -> Self {
        PluginLimits {
            call_deadline: Duration::from_millis(20),
            configure_deadline: Duration::from_secs(5),
            memory_bytes: 64 << 20,
        }
    }
}
