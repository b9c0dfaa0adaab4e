//! Write Fulcrum plugins in Rust as plain trait impls.
//!
//! Fulcrum plugins are WebAssembly components that implement a world of the `fulcrum:plugin` WIT
//! package (in the repository's `wit/` folder, the single source of truth). This crate generates the
//! guest bindings for you and hides the component-model plumbing behind two traits:
//!
//! - [`Selector`] (feature `selector`): an lbmethod. Fulcrum owns the balancing state; your
//!   `select` picks one of the candidate members and may rewrite the `lbstatus` counters.
//! - `Rules` (feature `rules`): header and environment rules, like Apache's mod_setenvif and
//!   mod_headers.
//!
//! ```ignore
//! use fulcrum_sdk::selector::*;
//!
//! struct FirstCandidate;
//!
//! impl fulcrum_sdk::Selector for FirstCandidate {
//!     fn configure(_balancer: &BalancerInfo) -> Result<(Self, Needs), PluginError> {
//!         Ok((FirstCandidate, Needs::default()))
//!     }
//!     fn select(&mut self, _request: &RequestView, state: &State) -> Decision {
//!         Decision { member: state.candidates.first().copied(), lbstatus: Vec::new() }
//!     }
//! }
//!
//! fulcrum_sdk::export_selector!(FirstCandidate);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-unknown-unknown` and turn the module into a
//! component (`wasm-tools component new`, or the `wit-component` crate as Fulcrum's own build does).
//! The trait methods are plain Rust, so plugin logic is unit-tested natively with `cargo test`;
//! [`testing::SelectorHarness`] (feature `selector`) drives a selector the way Fulcrum does.

#[doc(hidden)]
pub use wit_bindgen;

// The generated bindings name this crate by its absolute path so that the export macros work from
// plugin crates; this makes the same path resolve inside the SDK itself.
extern crate self as fulcrum_sdk;

/// Guest bindings of the `selector-plugin` world, generated from `wit/`.
#[cfg(feature = "selector")]
#[allow(missing_docs, clippy::all, unsafe_op_in_unsafe_fn)]
pub mod selector_bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "fulcrum:plugin/selector-plugin",
        pub_export_macro: true,
        export_macro_name: "export_selector_world",
        default_bindings_module: "::fulcrum_sdk::selector_bindings",
        runtime_path: "::fulcrum_sdk::wit_bindgen::rt",
        bitflags_path: "::fulcrum_sdk::wit_bindgen::rt::bitflags",
        type_section_suffix: "fulcrum-sdk-selector",
        generate_all,
    });
}

/// Guest bindings of the `rules-plugin` world, generated from `wit/`.
#[cfg(feature = "rules")]
#[allow(missing_docs, clippy::all, unsafe_op_in_unsafe_fn)]
pub mod rules_bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "fulcrum:plugin/rules-plugin",
        pub_export_macro: true,
        export_macro_name: "export_rules_world",
        default_bindings_module: "::fulcrum_sdk::rules_bindings",
        runtime_path: "::fulcrum_sdk::wit_bindgen::rt",
        bitflags_path: "::fulcrum_sdk::wit_bindgen::rt::bitflags",
        type_section_suffix: "fulcrum-sdk-rules",
        generate_all,
    });
}

#[cfg(feature = "selector")]
pub mod testing;

/// The types a selector works with, in one import: `use fulcrum_sdk::selector::*;`.
#[cfg(feature = "selector")]
pub mod selector {
    pub use crate::selector_bindings::exports::fulcrum::plugin::selector::{
        BalancerInfo, Decision, Member, Needs, State, StateColumns,
    };
    pub use crate::selector_bindings::fulcrum::plugin::types::{PluginConfig, PluginError, RequestFields, RequestView};
    pub use crate::{Level, Selector, log};
}

#[cfg(feature = "selector")]
impl Default for selector::Needs {
    fn default() -> Self {
        selector::Needs {
            fields: selector::RequestFields::empty(),
            headers: Vec::new(),
            columns: selector::StateColumns::empty(),
        }
    }
}

/// The types a rules plugin works with, in one import: `use fulcrum_sdk::rules::*;`.
#[cfg(feature = "rules")]
pub mod rules {
    pub use crate::rules_bindings::exports::fulcrum::plugin::rules::{
        EnvAction, HeaderAction, HeaderOp, Needs, Outcome, ResponseOrigin, ResponseView,
    };
    pub use crate::rules_bindings::fulcrum::plugin::types::{PluginConfig, PluginError, RequestFields, RequestView};
    pub use crate::{Level, Rules, log};
}

#[cfg(feature = "rules")]
impl Default for rules::Needs {
    fn default() -> Self {
        rules::Needs {
            fields: rules::RequestFields::empty(),
            request_headers: Vec::new(),
            response_headers: Vec::new(),
        }
    }
}

#[cfg(feature = "rules")]
#[allow(clippy::derivable_impls)] // a generated type: it cannot take a derive
impl Default for rules::Outcome {
    fn default() -> Self {
        rules::Outcome { env: Vec::new(), headers: Vec::new() }
    }
}

/// Header and environment rules (what Apache's mod_setenvif and mod_headers do).
///
/// One value of your type lives per rule set: Fulcrum calls [`Rules::configure`] once with your
/// configuration, then [`Rules::on_request`] when a request has been read and
/// [`Rules::on_response`] before the response is sent. Answer with actions; Fulcrum applies them.
#[cfg(feature = "rules")]
pub trait Rules: Sized + 'static {
    /// Parse and check the configuration (regexes compiled here, once); say which request fields
    /// and headers the rules read. An `Err` is reported at load time, naming the plugin.
    fn configure(config: &rules::PluginConfig) -> Result<(Self, rules::Needs), rules::PluginError>;

    /// Env and request-header actions for a request (before a member is chosen).
    fn on_request(&mut self, request: &rules::RequestView, env: &[(String, String)]) -> rules::Outcome;

    /// Env and response-header actions for a response (`env` now holds the BALANCER_* variables).
    fn on_response(
        &mut self,
        request: &rules::RequestView,
        response: &rules::ResponseView,
        env: &[(String, String)],
    ) -> rules::Outcome;
}

/// Export a [`Rules`] implementation as the plugin's `rules` interface.
#[cfg(feature = "rules")]
#[macro_export]
macro_rules! export_rules {
    ($ty:ty) => {
        // Only a Wasm build is a component: natively (plugin unit tests) the component-model
        // export names would not link into a cdylib, and nothing would call them.
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            use $crate::rules_bindings::exports::fulcrum::plugin::rules as __wit;
            use $crate::rules_bindings::fulcrum::plugin::types as __types;

            ::std::thread_local! {
                static __FULCRUM_RULES: ::std::cell::RefCell<::std::option::Option<$ty>> =
                    const { ::std::cell::RefCell::new(::std::option::Option::None) };
            }

            fn __with<R>(f: impl FnOnce(&mut $ty) -> R) -> R {
                __FULCRUM_RULES.with(|cell| {
                    let mut slot = cell.borrow_mut();
                    match slot.as_mut() {
                        ::std::option::Option::Some(rules) => f(rules),
                        ::std::option::Option::None => ::core::panic!("rules called before configure"),
                    }
                })
            }

            struct __FulcrumRulesExport;

            impl __wit::Guest for __FulcrumRulesExport {
                fn configure(
                    config: __types::PluginConfig,
                ) -> ::std::result::Result<__wit::Needs, __types::PluginError> {
                    let (rules, needs) = <$ty as $crate::Rules>::configure(&config)?;
                    __FULCRUM_RULES.with(|cell| *cell.borrow_mut() = ::std::option::Option::Some(rules));
                    ::std::result::Result::Ok(needs)
                }
                fn on_request(
                    request: __types::RequestView,
                    env: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
                ) -> __wit::Outcome {
                    __with(|r| <$ty as $crate::Rules>::on_request(r, &request, &env))
                }
                fn on_response(
                    request: __types::RequestView,
                    response: __wit::ResponseView,
                    env: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
                ) -> __wit::Outcome {
                    __with(|r| <$ty as $crate::Rules>::on_response(r, &request, &response, &env))
                }
            }

    $crate::rules_bindings::export_rules_world!(__FulcrumRulesExport with_types_in $crate::rules_bindings);
        };
    };
}

/// An lbmethod: picks a member for each request that has no usable sticky route.
///
/// One value of your type lives per balancer: Fulcrum calls [`Selector::configure`] with the
/// balancer's members (again when they change), then [`Selector::select`] per request. The host holds
/// the balancer's state while you run, so reading `state.lbstatus` and returning new counters is one
/// atomic step.
#[cfg(feature = "selector")]
pub trait Selector: Sized + 'static {
    /// Build the selector for a balancer and say what it needs per request. An `Err` refuses the
    /// configuration; Fulcrum reports it with the balancer's name at load time.
    fn configure(balancer: &selector::BalancerInfo) -> Result<(Self, selector::Needs), selector::PluginError>;

    /// Pick one of `state.candidates` (or decline with `member: None`), and optionally return the
    /// new `lbstatus` of every member.
    fn select(&mut self, request: &selector::RequestView, state: &selector::State) -> selector::Decision;

    /// Fulcrum honoured a sticky route to `member`: return new `lbstatus` values (empty: unchanged).
    fn sticky(&mut self, member: u32, state: &selector::State) -> Vec<i64> {
        let _ = (member, state);
        Vec::new()
    }
}

/// Export a [`Selector`] implementation as the plugin's `selector` interface.
#[cfg(feature = "selector")]
#[macro_export]
macro_rules! export_selector {
    ($ty:ty) => {
        // Only a Wasm build is a component: natively (plugin unit tests) the component-model
        // export names would not link into a cdylib, and nothing would call them.
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            use $crate::selector_bindings::exports::fulcrum::plugin::selector as __wit;
            use $crate::selector_bindings::fulcrum::plugin::types as __types;

            ::std::thread_local! {
                static __FULCRUM_SELECTOR: ::std::cell::RefCell<::std::option::Option<$ty>> =
                    const { ::std::cell::RefCell::new(::std::option::Option::None) };
            }

            fn __with<R>(f: impl FnOnce(&mut $ty) -> R) -> R {
                __FULCRUM_SELECTOR.with(|cell| {
                    let mut slot = cell.borrow_mut();
                    match slot.as_mut() {
                        ::std::option::Option::Some(selector) => f(selector),
                        // The host always configures first; reaching this is a host bug, and a trap
                        // is the contained way to say so.
                        ::std::option::Option::None => ::core::panic!("selector called before configure"),
                    }
                })
            }

            struct __FulcrumSelectorExport;

            impl __wit::Guest for __FulcrumSelectorExport {
                fn configure(balancer: __wit::BalancerInfo) -> ::std::result::Result<__wit::Needs, __types::PluginError> {
                    let (selector, needs) = <$ty as $crate::Selector>::configure(&balancer)?;
                    __FULCRUM_SELECTOR.with(|cell| *cell.borrow_mut() = ::std::option::Option::Some(selector));
                    ::std::result::Result::Ok(needs)
                }
                fn select(request: __types::RequestView, state: __wit::State) -> __wit::Decision {
                    __with(|s| <$ty as $crate::Selector>::select(s, &request, &state))
                }
                fn sticky(member: u32, state: __wit::State) -> ::std::vec::Vec<i64> {
                    __with(|s| <$ty as $crate::Selector>::sticky(s, member, &state))
                }
            }

            $crate::selector_bindings::export_selector_world!(__FulcrumSelectorExport with_types_in $crate::selector_bindings);
        };
    };
}

/// Log levels for [`log`].
#[cfg(any(feature = "selector", feature = "rules"))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// Write a line to Fulcrum's log, tagged with this plugin's name and the current request.
#[cfg(any(feature = "selector", feature = "rules"))]
pub fn log(level: Level, message: &str) {
    #[cfg(feature = "selector")]
    {
        use selector_bindings::fulcrum::plugin::{host, types::LogLevel};
        let level = match level {
            Level::Trace => LogLevel::Trace,
            Level::Debug => LogLevel::Debug,
            Level::Info => LogLevel::Info,
            Level::Warn => LogLevel::Warn,
            Level::Error => LogLevel::Error,
        };
        host::log(level, message);
    }
    #[cfg(all(feature = "rules", not(feature = "selector")))]
    {
        use rules_bindings::fulcrum::plugin::{host, types::LogLevel};
        let level = match level {
            Level::Trace => LogLevel::Trace,
            Level::Debug => LogLevel::Debug,
            Level::Info => LogLevel::Info,
            Level::Warn => LogLevel::Warn,
            Level::Error => LogLevel::Error,
        };
        host::log(level, message);
    }
}

/// Helpers for plugin authors that do not depend on the bindings.
pub mod util {
    /// Apache's smooth weighted round robin (mod_lbmethod_byrequests) over `candidates`, in place:
    /// every candidate gets `lbstatus += lbfactor`; the one with the strictly greatest `lbstatus`
    /// wins (ties: the first listed); the winner pays back the sum of the candidates' factors.
    /// Returns the winner, or `None` when there is no candidate.
    pub fn smooth_weighted_pick(candidates: &[u32], lbfactor: &[i64], lbstatus: &mut [i64]) -> Option<u32> {
        let mut best: Option<u32> = None;
        let mut total = 0i64;
        for &i in candidates {
            let i_us = i as usize;
            lbstatus[i_us] = lbstatus[i_us].saturating_add(lbfactor[i_us]);
            total = total.saturating_add(lbfactor[i_us]);
            if best.is_none_or(|b| lbstatus[i_us] > lbstatus[b as usize]) {
                best = Some(i);
            }
        }
        if let Some(b) = best {
            lbstatus[b as usize] = lbstatus[b as usize].saturating_sub(total);
        }
        best
    }

    /// Apache's `updatelbstatus` for a sticky request: the same arithmetic as
    /// [`smooth_weighted_pick`] with the winner fixed to `chosen`.
    pub fn smooth_weighted_charge(candidates: &[u32], lbfactor: &[i64], lbstatus: &mut [i64], chosen: u32) {
        let mut total = 0i64;
        for &i in candidates {
            let i_us = i as usize;
            lbstatus[i_us] = lbstatus[i_us].saturating_add(lbfactor[i_us]);
            total = total.saturating_add(lbfactor[i_us]);
        }
        if let Some(slot) = lbstatus.get_mut(chosen as usize) {
            *slot = slot.saturating_sub(total);
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn sequence(factors: &[i64], n: usize) -> Vec<u32> {
            let candidates: Vec<u32> = (0..factors.len() as u32).collect();
            let mut lbstatus = vec![0; factors.len()];
            (0..n).map(|_| smooth_weighted_pick(&candidates, factors, &mut lbstatus).unwrap()).collect()
        }

        #[test]
        fn equal_weights_alternate_starting_with_the_first() {
            assert_eq!(sequence(&[100, 100], 6), [0, 1, 0, 1, 0, 1]);
        }

        #[test]
        fn one_to_two_gives_web2_web1_web2() {
            assert_eq!(sequence(&[100, 200], 6), [1, 0, 1, 1, 0, 1]);
        }

        #[test]
        fn sticky_charges_advance_the_counters() {
            // docs/apache-behaviour.md §2.5: 1 unsticky (web1) + 3 sticky to web1, then 4 unsticky all go to web2.
            let c = [0, 1];
            let f = [100, 100];
            let mut lb = [0, 0];
            assert_eq!(smooth_weighted_pick(&c, &f, &mut lb), Some(0));
            for _ in 0..3 {
                smooth_weighted_charge(&c, &f, &mut lb, 0);
            }
            let next: Vec<_> = (0..6).map(|_| smooth_weighted_pick(&c, &f, &mut lb).unwrap()).collect();
            assert_eq!(next, [1, 1, 1, 1, 0, 1]);
        }
    }
}
