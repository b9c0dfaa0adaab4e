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
    #[doc(hidden)]
    pub use crate::rules_call::begin_phase;
    pub use crate::rules_call::{
        Action, Call, EnvAction, EnvVar, Fields, HeaderOp, Inputs, Layout, Needs, Outcome, RequestCall, ResponseCall,
        Target,
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
                    $crate::rules::begin_phase(response.is_some());
                    let outcome = match response {
                        ::std::option::Option::None => <$ty as $crate::Rules>::on_request(rules, &call),
                        ::std::option::Option::Some(_) => <$ty as $crate::Rules>::on_response(rules, &call),
                    };
                    let (actions, values) = outcome.into_wire();
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
    /// The counters are swept sixteen at a time ([`sweep`]): add the factors, store, and only ask
    /// whether any of the sixteen beats the leader so far. The leader changes a few times per
    /// pass (with equal factors, once: the counters of the members not yet served this cycle are
    /// equal), so the block is looked at member by member, in order, only then ([`Lead::challenge`]),
    /// and the winner is the one pass in order would find: the first strictly greatest. The
    /// members after the last block of sixteen are taken one at a time.
    fn pick_all(status: &mut [i64], factor: &[i64]) -> (u32, i64) {
        let n = status.len().min(factor.len());
        let whole = n & !(BLOCK - 1);
        // The first member leads from the start: a later one takes the lead only with a strictly
        // greater counter, so when every counter is `i64::MIN` the first member wins, as in one
        // pass in order.
        let mut lead = Lead { index: 0, best: i64::MIN };
        let mut total = sweep(&mut status[..whole], &factor[..whole], &mut lead);
        for (i, (s, &f)) in status[whole..n].iter_mut().zip(&factor[whole..n]).enumerate() {
            *s = s.wrapping_add(f);
            total = total.wrapping_add(f);
            if *s > lead.best {
                lead = Lead { index: (whole + i) as u32, best: *s };
            }
        }
        (lead.index, total)
    }

    /// Members per block of [`sweep`].
    const BLOCK: usize = 16;

    /// The leader of a pass so far: its member and its counter (after its factor was added).
    struct Lead {
        index: u32,
        best: i64,
    }

    impl Lead {
        /// Let the counters of the members `first..` (already added to) challenge the leader, in
        /// order: a strictly greater counter takes the lead.
        fn challenge(&mut self, first: usize, counters: &[i64]) {
            for (i, &c) in counters.iter().enumerate() {
                if c > self.best {
                    *self = Lead { index: (first + i) as u32, best: c };
                }
            }
        }
    }

    /// Add each member's factor to its counter over whole blocks of [`BLOCK`] members (the
    /// lengths are a multiple of it), keeping `lead` the first strictly greatest counter; returns
    /// the factors' sum. One block at a time, without SIMD (native builds: tests).
    #[cfg(not(target_arch = "wasm32"))]
    fn sweep(status: &mut [i64], factor: &[i64], lead: &mut Lead) -> i64 {
        let mut total = 0i64;
        for (b, (s, f)) in status.chunks_exact_mut(BLOCK).zip(factor.chunks_exact(BLOCK)).enumerate() {
            let mut ahead = false;
            for (s, &f) in s.iter_mut().zip(f) {
                *s = s.wrapping_add(f);
                total = total.wrapping_add(f);
                ahead |= *s > lead.best;
            }
            if ahead {
                lead.challenge(b * BLOCK, s);
            }
        }
        total
    }

    /// [`sweep`] in Wasm SIMD (128-bit vectors, on in wasmtime's default configuration, which
    /// Fulcrum's plugin engine keeps): a block is eight `i64x2` vectors; each is added to, stored
    /// and compared with the leader's counter in every lane (`i64x2.gt_s`), the comparisons
    /// or-ed together, and the block looked at member by member only when one of them holds.
    ///
    /// Blocks of sixteen because wasmtime checks the call's deadline at the top of every loop
    /// and Cranelift keeps the vectors that live across that check on the stack (the check may
    /// call out): two of them here, stored and reloaded once per sixteen members.
    #[cfg(target_arch = "wasm32")]
    #[target_feature(enable = "simd128")]
    fn sweep(status: &mut [i64], factor: &[i64], lead: &mut Lead) -> i64 {
        use core::arch::wasm32::*;

        let n = status.len().min(factor.len()) & !(BLOCK - 1);
        let (s, f) = (status.as_mut_ptr(), factor.as_ptr());
        let mut total = i64x2_splat(0);
        let mut bar = i64x2_splat(lead.best);
        let mut at = 0;
        while at < n {
            let mut ahead = i64x2_splat(0);
            // Members `at + 2j` and `at + 2j + 1`: add, store, note whether either beats the
            // leader, and add the factors to the sum.
            macro_rules! pair {
                ($j:expr) => {{
                    // SAFETY: `at + 16 <= n`, at most the length of both slices, so the 16 bytes
                    // at `at + 2j` are in bounds in each; `v128_load` and `v128_store` need no
                    // alignment.
                    unsafe {
                        let fv = v128_load(f.add(at + 2 * $j).cast::<v128>());
                        let a = i64x2_add(v128_load(s.add(at + 2 * $j).cast::<v128>()), fv);
                        v128_store(s.add(at + 2 * $j).cast::<v128>(), a);
                        ahead = v128_or(ahead, i64x2_gt(a, bar));
                        total = i64x2_add(total, fv);
                    }
                }};
            }
            pair!(0);
            pair!(1);
            pair!(2);
            pair!(3);
            pair!(4);
            pair!(5);
            pair!(6);
            pair!(7);
            if v128_any_true(ahead) {
                // SAFETY: as above, the block's 16 counters are in bounds; nothing else refers to
                // them while this slice lives.
                lead.challenge(at, unsafe { core::slice::from_raw_parts(s.add(at), BLOCK) });
                bar = i64x2_splat(lead.best);
            }
            at += BLOCK;
        }
        i64x2_extract_lane::<0>(total).wrapping_add(i64x2_extract_lane::<1>(total))
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
