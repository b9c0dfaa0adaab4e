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

/// A faster allocator for plugins (opt in with `#[global_allocator]`).
pub mod allocator;

/// The types a selector works with, in one import: `use fulcrum_sdk::selector::*;`.
#[cfg(feature = "selector")]
pub mod selector {
    pub use crate::selector_bindings::exports::fulcrum::plugin::selector::{
        BalancerInfo, Decision, Member, Needs, State, StateColumns,
    };
    pub use crate::selector_bindings::fulcrum::plugin::types::{PluginConfig, PluginError, RequestFields, RequestView};
    pub use crate::{Level, Selector, log};

    /// A member's own report of its load (mod_heartmonitor's `busy=N&ready=M`, read by Fulcrum's
    /// health checks), from [`State::load`].
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct LoadReport {
        /// Requests the member says it is busy with.
        pub busy: u32,
        /// Requests the member says it is ready to take more of (its free capacity).
        pub ready: u32,
    }
}

/// The state columns, read out of the one list they cross the boundary in (`values`: the declared
/// columns end to end, in the order lbstatus, busy, traffic, load; `wit/selector.wit`). Every
/// slice is indexed by member, and empty when the column was not passed (not declared in
/// [`selector::Needs::columns`], or busy, traffic and load in a `sticky` call).
#[cfg(feature = "selector")]
impl selector::State {
    /// Pack columns as Fulcrum does: each one given is one value per member (all of the same
    /// length); `None` leaves the column out. For tests and tools; Fulcrum builds the state itself.
    pub fn pack(
        candidates: Vec<u32>,
        lbstatus: Option<&[i64]>,
        busy: Option<&[u64]>,
        traffic: Option<&[u64]>,
        load: Option<&[Option<selector::LoadReport>]>,
    ) -> selector::State {
        let mut columns = selector::StateColumns::empty();
        let mut values = Vec::new();
        let count = |n: &u64| i64::try_from(*n).unwrap_or(i64::MAX);
        if let Some(column) = lbstatus {
            columns |= selector::StateColumns::LBSTATUS;
            values.extend_from_slice(column);
        }
        if let Some(column) = busy {
            columns |= selector::StateColumns::BUSY;
            values.extend(column.iter().map(count));
        }
        if let Some(column) = traffic {
            columns |= selector::StateColumns::TRAFFIC;
            values.extend(column.iter().map(count));
        }
        if let Some(column) = load {
            columns |= selector::StateColumns::LOAD;
            values.extend(column.iter().map(|r| r.map_or(-1, |r| (i64::from(r.busy) << 32) | i64::from(r.ready))));
        }
        selector::State { candidates, columns, values }
    }

    /// The number of members the columns cover (0 when no column was passed).
    pub fn members(&self) -> usize {
        match self.columns.bits().count_ones() {
            0 => 0,
            k => self.values.len() / k as usize,
        }
    }

    fn column(&self, column: selector::StateColumns) -> &[i64] {
        if !self.columns.contains(column) {
            return &[];
        }
        let n = self.members();
        // The columns before this one in the WIT's order (lower flag bits) come first.
        let before = (self.columns.bits() & (column.bits() - 1)).count_ones() as usize;
        self.values.get(before * n..(before + 1) * n).unwrap_or(&[])
    }

    /// Apache's lbstatus counter of every member.
    pub fn lbstatus(&self) -> &[i64] {
        self.column(selector::StateColumns::LBSTATUS)
    }

    /// Take the lbstatus column out of the state (empty when it was not passed), to change and
    /// answer it without copying it first; the other columns read as before, and `lbstatus()`
    /// reads empty after. When lbstatus is the only column (what byrequests declares) nothing is
    /// copied at all.
    pub fn take_lbstatus(&mut self) -> Vec<i64> {
        if !self.columns.contains(selector::StateColumns::LBSTATUS) {
            return Vec::new();
        }
        let n = self.members();
        // lbstatus is the first column in the WIT's order: what follows it stays.
        let rest = if n < self.values.len() { self.values.split_off(n) } else { Vec::new() };
        self.columns.remove(selector::StateColumns::LBSTATUS);
        let mut lbstatus = std::mem::replace(&mut self.values, rest);
        lbstatus.truncate(n);
        lbstatus
    }

    /// Requests in flight to every member (never negative).
    pub fn busy(&self) -> &[i64] {
        self.column(selector::StateColumns::BUSY)
    }

    /// Bytes sent to plus bytes read from every member (never negative).
    pub fn traffic(&self) -> &[i64] {
        self.column(selector::StateColumns::TRAFFIC)
    }

    /// `member`'s fresh load report, if it has one (and the load column was passed).
    pub fn load(&self, member: u32) -> Option<selector::LoadReport> {
        let packed = *self.column(selector::StateColumns::LOAD).get(member as usize)?;
        // Only -1 is "none": a busy count of 2^31 or more packs to a negative number too.
        (packed != -1).then_some(selector::LoadReport { busy: (packed >> 32) as u32, ready: packed as u32 })
    }
}

#[cfg(all(test, feature = "selector"))]
mod state_tests {
    use crate::selector::{LoadReport, State, StateColumns};

    /// Client (the harness) packs, selector reads: each column where the WIT puts it, whatever
    /// columns come before it; a missing column reads empty; only -1 is "no load report".
    #[test]
    fn the_columns_read_back_as_packed() {
        let load = [Some(LoadReport { busy: 3, ready: 7 }), None, Some(LoadReport { busy: u32::MAX, ready: 0 })];
        let all = State::pack(vec![0, 2], Some(&[-1, 0, 9]), Some(&[1, 2, 3]), Some(&[10, 20, u64::MAX]), Some(&load));
        assert_eq!((all.members(), all.columns), (3, StateColumns::all()));
        assert_eq!(all.lbstatus(), [-1, 0, 9]);
        assert_eq!(all.busy(), [1, 2, 3]);
        assert_eq!(all.traffic(), [10, 20, i64::MAX]);
        assert_eq!([all.load(0), all.load(1), all.load(2), all.load(3)], [load[0], None, load[2], None]);

        let some = State::pack(vec![1], None, Some(&[4, 5]), None, Some(&load[..2]));
        assert_eq!((some.members(), some.busy(), some.lbstatus()), (2, &[4, 5][..], &[][..]));
        assert_eq!((some.traffic(), some.load(0), some.load(1)), (&[][..], load[0], None));

        let none = State::pack(vec![0], None, None, None, None);
        assert_eq!((none.members(), none.lbstatus(), none.load(0)), (0, &[][..], None));

        // Taking lbstatus out leaves the other columns as they read.
        let mut taken = all.clone();
        assert_eq!(taken.take_lbstatus(), [-1, 0, 9]);
        assert_eq!(
            (taken.lbstatus(), taken.busy(), taken.traffic()),
            (&[][..], &[1, 2, 3][..], &[10, 20, i64::MAX][..])
        );
        assert_eq!([taken.load(0), taken.load(2)], [load[0], load[2]]);
        assert!(taken.take_lbstatus().is_empty(), "taken once");
        let mut alone = State::pack(vec![0], Some(&[7, 8]), None, None, None);
        assert_eq!((alone.take_lbstatus(), alone.members()), (vec![7, 8], 0));
    }
}

/// A request with nothing in it, what a selector that declared no request fields and no headers
/// is given (`select` passes it no request at all: nothing crosses).
#[cfg(feature = "selector")]
impl Default for selector::RequestView {
    fn default() -> Self {
        selector::RequestView {
            method: String::new(),
            path: String::new(),
            query: String::new(),
            client_addr: String::new(),
            host: String::new(),
            headers: Vec::new(),
        }
    }
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
    pub use crate::rules_bindings::exports::fulcrum::plugin::rules::{Clock, ResponseOrigin};
    pub use crate::rules_bindings::fulcrum::plugin::types::{PluginConfig, PluginError, RequestFields};
    pub use crate::rules_call::{
        Call, EnvAction, EnvVar, Fields, HeaderAction, HeaderOp, Inputs, Layout, Needs, Outcome, RequestCall,
        ResponseCall, Target,
    };
    pub use crate::{Level, Rules, log};
}

#[cfg(feature = "rules")]
pub mod rules_call;

/// Header and environment rules (what Apache's mod_setenvif and mod_headers do), for the rules
/// interface of `fulcrum:plugin@0.5.0` (the version in `wit/`).
///
/// One value of your type lives per rule set: Fulcrum calls [`Rules::configure`] once with your
/// configuration, where you declare by name what you read and what you change (the [`rules::Needs`]
/// builder hands back cheap handles, [`rules::EnvVar`] and [`rules::Target`]); then
/// [`Rules::on_request`] when a request has been read and [`Rules::on_response`] before the
/// response is sent. A [`rules::Call`] borrows the values straight from what Fulcrum passed
/// (nothing is copied); answer with actions in an [`rules::Outcome`], and Fulcrum applies them.
///
/// Only declared names exist for a call: reading an undeclared header or variable by name, or
/// naming an undeclared target, logs what is missing and traps (a fault of that request).
#[cfg(feature = "rules")]
pub trait Rules: Sized + 'static {
    /// Parse and check the configuration (regexes compiled here, once); declare in `needs` the
    /// request fields, headers and env variables the rules read, and the variables and headers
    /// they change. An `Err` is reported at load time, naming the plugin.
    fn configure(config: &rules::PluginConfig, needs: &mut rules::Needs) -> Result<Self, rules::PluginError>;

    /// Env and request-header actions for a request (before a member is chosen).
    fn on_request(&mut self, call: &rules::RequestCall<'_>) -> rules::Outcome;

    /// Env and response-header actions for a response (the env now holds the BALANCER_* variables).
    fn on_response(&mut self, call: &rules::ResponseCall<'_>) -> rules::Outcome;
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

            struct __State {
                rules: $ty,
                layout: $crate::rules::Layout,
                spans: ::std::vec::Vec<(u32, i32)>,
            }

            ::std::thread_local! {
                static __FULCRUM_RULES: ::std::cell::RefCell<::std::option::Option<__State>> =
                    const { ::std::cell::RefCell::new(::std::option::Option::None) };
            }

            fn __call(
                inputs: &[u8],
                clock: __wit::Clock,
                response: ::std::option::Option<(u16, __wit::ResponseOrigin)>,
            ) -> __wit::Outcome {
                __FULCRUM_RULES.with(|cell| {
                    let mut slot = cell.borrow_mut();
                    let ::std::option::Option::Some(state) = slot.as_mut() else {
                        ::core::panic!("rules called before configure")
                    };
                    let __State { rules, layout, spans } = state;
                    let call = $crate::rules::Call::from_block(layout, inputs, clock, response, spans);
                    let outcome = match response {
                        ::std::option::Option::None => <$ty as $crate::Rules>::on_request(rules, &call),
                        ::std::option::Option::Some(_) => <$ty as $crate::Rules>::on_response(rules, &call),
                    };
                    let (actions, values) = outcome.encode();
                    __wit::Outcome { actions, values }
                })
            }

            struct __FulcrumRulesExport;

            impl __wit::Guest for __FulcrumRulesExport {
                fn configure(
                    config: __types::PluginConfig,
                ) -> ::std::result::Result<__wit::Needs, __types::PluginError> {
                    let mut needs = $crate::rules::Needs::default();
                    let rules = <$ty as $crate::Rules>::configure(&config, &mut needs)?;
                    let layout = $crate::rules::Layout::new(needs);
                    let declared = layout.wit_needs();
                    let state = __State { rules, layout, spans: ::std::vec::Vec::new() };
                    __FULCRUM_RULES.with(|cell| *cell.borrow_mut() = ::std::option::Option::Some(state));
                    ::std::result::Result::Ok(declared)
                }
                fn on_request(inputs: __wit::Inputs, clock: __wit::Clock) -> __wit::Outcome {
                    __call(&inputs, clock, ::std::option::Option::None)
                }
                fn on_response(
                    status: u16,
                    origin: __wit::ResponseOrigin,
                    inputs: __wit::Inputs,
                    clock: __wit::Clock,
                ) -> __wit::Outcome {
                    __call(&inputs, clock, ::std::option::Option::Some((status, origin)))
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
/// the balancer's state while you run, so reading `state.lbstatus()` and returning new counters is
/// one atomic step.
#[cfg(feature = "selector")]
pub trait Selector: Sized + 'static {
    /// Build the selector for a balancer and say what it needs per request. An `Err` refuses the
    /// configuration; Fulcrum reports it with the balancer's name at load time.
    fn configure(balancer: &selector::BalancerInfo) -> Result<(Self, selector::Needs), selector::PluginError>;

    /// Pick one of `state.candidates` (or decline with `member: None`), and optionally return the
    /// new `lbstatus` of every member. `request` holds what [`selector::Needs`] declared (an empty
    /// view when that is nothing); the state's columns are read with [`selector::State::lbstatus`],
    /// [`selector::State::busy`], [`selector::State::traffic`] and [`selector::State::load`].
    fn select(&mut self, request: &selector::RequestView, state: &selector::State) -> selector::Decision;

    /// Fulcrum honoured a sticky route to `member`: return new `lbstatus` values (empty: unchanged).
    fn sticky(&mut self, member: u32, state: &selector::State) -> Vec<i64> {
        let _ = (member, state);
        Vec::new()
    }

    /// [`Selector::select`] with the state by value: what the plugin's export calls, and by
    /// default it lends the state to `select`. Implement it as well when the decision can reuse
    /// the state's buffers, its lbstatus column above all ([`selector::State::take_lbstatus`]):
    /// over many members that saves copying every counter once more per request.
    fn select_owned(&mut self, request: &selector::RequestView, state: selector::State) -> selector::Decision {
        self.select(request, &state)
    }

    /// [`Selector::sticky`] with the state by value, as [`Selector::select_owned`].
    fn sticky_owned(&mut self, member: u32, state: selector::State) -> Vec<i64> {
        self.sticky(member, &state)
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
                fn select(
                    request: ::std::option::Option<__types::RequestView>,
                    state: __wit::State,
                ) -> __wit::Decision {
                    // `None` when the selector declared nothing of the request: an empty view,
                    // which allocates nothing.
                    let request = request.unwrap_or_default();
                    __with(|s| <$ty as $crate::Selector>::select_owned(s, &request, state))
                }
                fn sticky(member: u32, state: __wit::State) -> ::std::vec::Vec<i64> {
                    __with(|s| <$ty as $crate::Selector>::sticky_owned(s, member, state))
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
        // The sums wrap instead of saturating, as httpd's `int` arithmetic does not saturate
        // either: the counters stay within a few times the factors' total (lbfactor is at most
        // 10,000), far from either bound.
        let n = lbstatus.len().min(lbfactor.len());
        let all = candidates.len() == n
            && candidates.first() == Some(&0)
            && candidates.last().map(|&last| last as usize + 1) == Some(n);
        let (winner, total) = if all && n >= 1 {
            // The common case (every member a candidate: the host lists them ascending, so
            // `0..n`) runs over the two columns side by side, without an index check per member.
            // Over 1,000 members this loop is most of a `select`.
            pick_all(&mut lbstatus[..n], &lbfactor[..n])
        } else {
            let mut best: Option<(u32, i64)> = None;
            let mut total = 0i64;
            for &i in candidates {
                let (Some(status), Some(&factor)) = (lbstatus.get_mut(i as usize), lbfactor.get(i as usize)) else {
                    continue;
                };
                *status = status.wrapping_add(factor);
                total = total.wrapping_add(factor);
                if best.is_none_or(|(_, b)| *status > b) {
                    best = Some((i, *status));
                }
            }
            (best?.0, total)
        };
        lbstatus[winner as usize] = lbstatus[winner as usize].wrapping_sub(total);
        Some(winner)
    }

    /// Apache's `updatelbstatus` for a sticky request: the same arithmetic as
    /// [`smooth_weighted_pick`] with the winner fixed to `chosen`.
    pub fn smooth_weighted_charge(candidates: &[u32], lbfactor: &[i64], lbstatus: &mut [i64], chosen: u32) {
        let mut total = 0i64;
        for &i in candidates {
            let (Some(status), Some(&factor)) = (lbstatus.get_mut(i as usize), lbfactor.get(i as usize)) else {
                continue;
            };
            *status = status.wrapping_add(factor);
            total = total.wrapping_add(factor);
        }
        if let Some(slot) = lbstatus.get_mut(chosen as usize) {
            *slot = slot.wrapping_sub(total);
        }
    }

    /// [`smooth_weighted_pick`] over every member (`status` and `factor` of the same length, not
    /// empty), before the winner pays: the winner and the factors' sum.
    ///
    /// The counters are taken four at a time: four lanes (members `4k + l`), each keeping its
    /// first strictly greatest counter, so that no compare-and-keep waits for the previous
    /// member's; of the lane leaders the greatest wins, on a tie the lowest index: the winner of
    /// one pass in order. The members after the last group of four have the highest indices, so
    /// only a strictly greater counter takes the lead from there. In a Wasm plugin the lanes are
    /// two `i64x2` vectors ([`lanes::leaders`]): the built-in byrequests' `select` over 1,000
    /// members went from 2.24 to 1.35 µs with them (criterion, 2026-12-03).
    fn pick_all(status: &mut [i64], factor: &[i64]) -> (u32, i64) {
        let n = status.len().min(factor.len());
        let (status, status_tail) = status[..n].split_at_mut(n & !3);
        let (factor, factor_tail) = factor[..n].split_at(n & !3);
        let (mut lead, mut total) = match lanes::leaders(status, factor) {
            Some(lanes) => {
                let mut lead = (lanes.index[0], lanes.best[0]);
                for (&index, &best) in lanes.index.iter().zip(&lanes.best).skip(1) {
                    if best > lead.1 || (best == lead.1 && index < lead.0) {
                        lead = (index, best);
                    }
                }
                (Some(lead), lanes.total)
            }
            None => (None, 0),
        };
        let base = status.len() as u32;
        for (k, (s, &f)) in status_tail.iter_mut().zip(factor_tail).enumerate() {
            *s = s.wrapping_add(f);
            total = total.wrapping_add(f);
            if lead.is_none_or(|(_, best)| *s > best) {
                lead = Some((base + k as u32, *s));
            }
        }
        (lead.map_or(0, |(index, _)| index), total)
    }

    /// Four lanes' leaders over a whole number of groups of four members.
    struct Lanes {
        /// Each lane's first strictly greatest counter, after its factor was added.
        best: [i64; 4],
        /// Its member's index.
        index: [u32; 4],
        /// The sum of every factor.
        total: i64,
    }

    /// The lanes one member at a time, where there is no Wasm SIMD (native builds: tests).
    #[cfg(not(target_arch = "wasm32"))]
    mod lanes {
        use super::Lanes;

        /// `None` when there is no group of four. `status.len() == factor.len()`, a multiple of 4.
        pub(super) fn leaders(status: &mut [i64], factor: &[i64]) -> Option<Lanes> {
            if status.is_empty() {
                return None;
            }
            let mut lanes = Lanes { best: [0; 4], index: [0, 1, 2, 3], total: 0 };
            for (k, (s, f)) in status.chunks_exact_mut(4).zip(factor.chunks_exact(4)).enumerate() {
                for l in 0..4 {
                    let a = s[l].wrapping_add(f[l]);
                    s[l] = a;
                    lanes.total = lanes.total.wrapping_add(f[l]);
                    if k == 0 || a > lanes.best[l] {
                        (lanes.best[l], lanes.index[l]) = (a, (4 * k + l) as u32);
                    }
                }
            }
            Some(lanes)
        }
    }

    /// The lanes as two `i64x2` vectors: members `4k` and `4k + 1` in one, `4k + 2` and `4k + 3`
    /// in the other (Wasm SIMD: 128-bit vectors, on in wasmtime's default configuration, which
    /// Fulcrum's plugin engine keeps).
    ///
    /// Four groups (16 members) per turn of the loop: wasmtime checks the call's deadline at the
    /// top of every loop, and Cranelift keeps the vectors that live across that check on the
    /// stack (the check may call out), so each turn stores and reloads them; four groups a turn
    /// pay that once per 16 members.
    #[cfg(target_arch = "wasm32")]
    mod lanes {
        use core::arch::wasm32::*;

        use super::Lanes;

        /// `None` when there is no group of four. `status.len() == factor.len()`, a multiple of 4.
        #[target_feature(enable = "simd128")]
        pub(super) fn leaders(status: &mut [i64], factor: &[i64]) -> Option<Lanes> {
            let n = status.len().min(factor.len()) & !3;
            if n == 0 {
                return None;
            }
            let (s, f) = (status.as_mut_ptr(), factor.as_ptr());
            // The leaders so far (lanes 0 and 1, lanes 2 and 3), the group number `k` of each
            // lane's leader (its member is `4k + lane`), and the factors' sum by lane pair. The
            // first group sets the leaders: a counter beats `i64::MIN` unless it is `i64::MIN`,
            // and then the leader stays that value in group 0 all the same.
            let (mut best0, mut best1) = (i64x2_splat(i64::MIN), i64x2_splat(i64::MIN));
            let (mut group0, mut group1, mut total) = (i64x2_splat(0), i64x2_splat(0), i64x2_splat(0));
            // Group `k` (members 4k to 4k + 3): add its factors to its counters, and let them
            // challenge the lanes' leaders.
            macro_rules! challenge {
                ($k:expr) => {{
                    let (k, at) = ($k, i64x2_splat($k as i64));
                    // SAFETY: `k < n / 4` and `n` is at most the length of both slices, so the
                    // 32 bytes of group `k` are in bounds in each; `v128_load` and `v128_store`
                    // need no alignment.
                    let (a0, a1, f0, f1) = unsafe {
                        let (f0, f1) = (v128_load(f.add(4 * k).cast()), v128_load(f.add(4 * k + 2).cast()));
                        let a0 = i64x2_add(v128_load(s.add(4 * k).cast::<v128>()), f0);
                        let a1 = i64x2_add(v128_load(s.add(4 * k + 2).cast::<v128>()), f1);
                        v128_store(s.add(4 * k).cast(), a0);
                        v128_store(s.add(4 * k + 2).cast(), a1);
                        (a0, a1, f0, f1)
                    };
                    let (ahead0, ahead1) = (i64x2_gt(a0, best0), i64x2_gt(a1, best1));
                    (best0, best1) = (v128_bitselect(a0, best0, ahead0), v128_bitselect(a1, best1, ahead1));
                    (group0, group1) = (v128_bitselect(at, group0, ahead0), v128_bitselect(at, group1, ahead1));
                    total = i64x2_add(total, i64x2_add(f0, f1));
                }};
            }
            let groups = n / 4;
            challenge!(0);
            let mut k = 1;
            while k + 4 <= groups {
                challenge!(k);
                challenge!(k + 1);
                challenge!(k + 2);
                challenge!(k + 3);
                k += 4;
            }
            while k < groups {
                challenge!(k);
                k += 1;
            }
            let index = |group: i64, lane: u32| (4 * group) as u32 + lane;
            Some(Lanes {
                best: [
                    i64x2_extract_lane::<0>(best0),
                    i64x2_extract_lane::<1>(best0),
                    i64x2_extract_lane::<0>(best1),
                    i64x2_extract_lane::<1>(best1),
                ],
                index: [
                    index(i64x2_extract_lane::<0>(group0), 0),
                    index(i64x2_extract_lane::<1>(group0), 1),
                    index(i64x2_extract_lane::<0>(group1), 2),
                    index(i64x2_extract_lane::<1>(group1), 3),
                ],
                total: i64x2_extract_lane::<0>(total).wrapping_add(i64x2_extract_lane::<1>(total)),
            })
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

        /// The algorithm as Apache writes it (mod_lbmethod_byrequests), index by index.
        fn reference_pick(candidates: &[u32], lbfactor: &[i64], lbstatus: &mut [i64]) -> Option<u32> {
            let mut best: Option<u32> = None;
            let mut total = 0;
            for &i in candidates {
                let i = i as usize;
                lbstatus[i] += lbfactor[i];
                total += lbfactor[i];
                if best.is_none_or(|b| lbstatus[i] > lbstatus[b as usize]) {
                    best = Some(i as u32);
                }
            }
            let b = best?;
            lbstatus[b as usize] -= total;
            Some(b)
        }

        /// Every member a candidate (the loop without index checks) and subsets of them (the
        /// indexed loop) give the reference's winners and counters, step after step.
        #[test]
        fn both_loops_match_the_reference() {
            let factors = [100, 300, 200, 100, 100, 500];
            let sets: [&[u32]; 5] = [&[0, 1, 2, 3, 4, 5], &[1, 3], &[0, 2, 4], &[5], &[0, 1, 2, 3, 4]];
            let (mut ours, mut theirs) = (vec![0i64; 6], vec![0i64; 6]);
            for step in 0..200 {
                let candidates = sets[step % 7 % sets.len()];
                assert_eq!(
                    smooth_weighted_pick(candidates, &factors, &mut ours),
                    reference_pick(candidates, &factors, &mut theirs),
                    "step {step}"
                );
                assert_eq!(ours, theirs, "step {step}");
            }
        }

        /// Every member a candidate, odd and even counts, equal factors (ties at every step,
        /// between the even and the odd members too) and uneven ones: the reference's winners.
        #[test]
        fn the_paired_loop_breaks_ties_as_the_reference() {
            for factors in
                [&[100, 100, 100, 100, 100][..], &[100, 100, 100, 100], &[200, 100, 100, 200, 100, 100, 300], &[5, 7]]
            {
                let candidates: Vec<u32> = (0..factors.len() as u32).collect();
                let (mut ours, mut theirs) = (vec![0i64; factors.len()], vec![0i64; factors.len()]);
                for step in 0..100 {
                    assert_eq!(
                        smooth_weighted_pick(&candidates, factors, &mut ours),
                        reference_pick(&candidates, factors, &mut theirs),
                        "{factors:?} step {step}"
                    );
                    assert_eq!(ours, theirs, "{factors:?} step {step}");
                }
            }
        }

        /// Every member a candidate, 1 to 40 of them (no group of four, one, several, and every
        /// remainder after the groups), factors that tie and factors that do not: the reference's
        /// winners and counters at every step.
        #[test]
        fn every_count_of_members_picks_as_the_reference() {
            for n in 1..=40u32 {
                for spread in [1, 3, 7] {
                    let factors: Vec<i64> = (0..n).map(|i| 100 * (1 + i64::from((i * 5 + n) % spread))).collect();
                    let candidates: Vec<u32> = (0..n).collect();
                    let (mut ours, mut theirs) = (vec![0i64; n as usize], vec![0i64; n as usize]);
                    for step in 0..3 * n {
                        assert_eq!(
                            smooth_weighted_pick(&candidates, &factors, &mut ours),
                            reference_pick(&candidates, &factors, &mut theirs),
                            "{n} members, factors {factors:?}, step {step}"
                        );
                        assert_eq!(ours, theirs, "{n} members, factors {factors:?}, step {step}");
                    }
                }
            }
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
