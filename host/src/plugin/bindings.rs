//! Host bindings generated from `wit/`, the one definition of the plugin interface.

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

pub use selector_world::fulcrum::plugin::types;
