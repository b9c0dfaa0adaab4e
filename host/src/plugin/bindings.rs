//! Host bindings generated from the WIT, the one definition of the plugin interface: `wit/` (the
//! current version, `fulcrum:plugin@0.2.0`) and `host/wit-0.1.0/` (the previous one, frozen, for
//! plugins built against it).
//!
//! Both versions share their `types` (identical shapes; the component model checks types by
//! structure, so one set of Rust types serves both). Selectors are called through
//! [`super::selector`]'s own typed functions, found by the version the component exports (the
//! `selector` interface has the same shapes in both versions); rules have a binding per version.

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

pub use selector_world::fulcrum::plugin::types;
