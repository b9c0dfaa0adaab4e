//! Host bindings generated from the WIT, the one definition of the plugin interface: `wit/` (the
//! current version, `fulcrum:plugin@0.5.0`) and the previous ones, frozen, for plugins built
//! against them: `host/wit-0.4.0/` to `host/wit-0.1.0/`.
//!
//! Every version shares its `types` (identical shapes; the component model checks types by
//! structure, so one set of Rust types serves them all). Exports are called through typed
//! functions found by the version the component exports ([`super::selector`], [`super::rules`]):
//! the `rules` interface of 0.4.0 and 0.3.0 has the shapes of 0.2.0 (0.5.0 packed the inputs and
//! the outcome), and the `selector` interface of 0.5.0 those of 0.4.0, of 0.2.0 those of 0.1.0
//! (0.3.0 added the load column, 0.4.0 packed the state), so one set of Rust types per shape
//! serves.

pub mod selector_world {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "fulcrum:plugin/selector-plugin",
    });
}

pub mod rules_world {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "fulcrum:plugin/rules-plugin",
        with: {
            "fulcrum:plugin/types": crate::plugin::bindings::selector_world::fulcrum::plugin::types,
            "fulcrum:plugin/host": crate::plugin::bindings::selector_world::fulcrum::plugin::host,
        },
    });
}

/// `fulcrum:plugin@0.1.0`'s rules world, with its own `host` import (linked under its version).
pub mod v0_1 {
    wasmtime::component::bindgen!({
        path: "wit-0.1.0",
        world: "fulcrum:plugin/rules-plugin",
        with: {
            "fulcrum:plugin/types": crate::plugin::bindings::selector_world::fulcrum::plugin::types,
        },
    });
}

/// `fulcrum:plugin@0.2.0`'s selector world: the selector shapes of 0.1.0 and 0.2.0 (no load
/// column), and its `host` import (linked under its version).
pub mod v0_2 {
    wasmtime::component::bindgen!({
        path: "wit-0.2.0",
        world: "fulcrum:plugin/selector-plugin",
        with: {
            "fulcrum:plugin/types": crate::plugin::bindings::selector_world::fulcrum::plugin::types,
        },
    });
}

/// `fulcrum:plugin@0.3.0`'s selector world: a list per state column, the load column among them,
/// and its `host` import (linked under its version).
pub mod v0_3 {
    wasmtime::component::bindgen!({
        path: "wit-0.3.0",
        world: "fulcrum:plugin/selector-plugin",
        with: {
            "fulcrum:plugin/types": crate::plugin::bindings::selector_world::fulcrum::plugin::types,
        },
    });
}

/// `fulcrum:plugin@0.4.0`'s rules world: the rules shapes of 0.2.0 to 0.4.0 (the inputs in a
/// string and a list of lengths, actions as records), and its `host` import (linked under its
/// version).
pub mod v0_4 {
    wasmtime::component::bindgen!({
        path: "wit-0.4.0",
        world: "fulcrum:plugin/rules-plugin",
        with: {
            "fulcrum:plugin/types": crate::plugin::bindings::selector_world::fulcrum::plugin::types,
        },
    });
}

pub use selector_world::fulcrum::plugin::types;
