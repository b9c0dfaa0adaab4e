//! [`WasmSelector`]: a selector-world component behind the core's [`MemberSelector`] trait.

use std::sync::Arc;

use wasmtime::Store;
use wasmtime::component::{ComponentExportIndex, Func, InstancePre, TypedFunc};

use super::PluginLimits;
use super::bindings::selector_world::exports::fulcrum::plugin::selector as wit;
use super::bindings::types;
use super::bindings::v0_2::exports::fulcrum::plugin::selector as wit2;
use super::bindings::v0_3::exports::fulcrum::plugin::selector as wit3;
use super::registry::CompiledPlugin;
use super::store::{self, StoreState};
use crate::Error;
use crate::balancer::{
    BalancerSpec, FaultKind, LoadReport, MemberSelector, RequestInfo, SelectState, Selection, SelectorFault,
    SelectorNeeds, StateColumns,
};
use crate::request::RequestFields;

/// One warm instance: its store and its typed exports.
type Live = super::call::Instance<SelectorPlugin>;

/// A selector component ready to instantiate: its `selector` export, found at the version the
/// component was built for. `0.1.0` and `0.2.0` have the same shapes ([`Shape::V2`]: the same
/// Rust types and typed functions serve both, as the component model checks types by structure);
/// `0.3.0` added the load column to `needs` and `state` ([`Shape::V3`]); `0.4.0` packs the state
/// into two lists and passes the request only to a selector that reads it ([`Shape::V4`]), and
/// `0.5.0` changed only the `rules` interface.
#[derive(Clone)]
pub struct SelectorPre {
    pre: InstancePre<StoreState>,
    shape: Shape,
    configure: ComponentExportIndex,
    select: ComponentExportIndex,
    sticky: ComponentExportIndex,
}

/// The shapes of a selector interface version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// `fulcrum:plugin@0.1.0` and `@0.2.0`: lbstatus, busy and traffic columns.
    V2,
    /// `fulcrum:plugin@0.3.0`: and the load column.
    V3,
    /// `fulcrum:plugin@0.4.0` and `@0.5.0`: the state columns end to end in one list, the request
    /// optional.
    V4,
}

type ConfigureSig = (Result<wit::Needs, types::PluginError>,);
type ConfigureSigV2 = (Result<wit2::Needs, types::PluginError>,);

impl SelectorPre {
    /// Find `fulcrum:plugin/selector@{version}` and its functions, and check their types.
    pub fn new(pre: InstancePre<StoreState>, version: &str) -> wasmtime::Result<SelectorPre> {
        let [configure, select, sticky] =
            super::export_functions(&pre, "selector", version, ["configure", "select", "sticky"])?;
        let shape = match version {
            "0.1.0" | "0.2.0" => Shape::V2,
            "0.3.0" => Shape::V3,
            _ => Shape::V4,
        };
        Ok(SelectorPre { pre, shape, configure, select, sticky })
    }

    /// A new instance, its functions type-checked.
    fn instantiate(&self, store: &mut Store<StoreState>) -> wasmtime::Result<SelectorPlugin> {
        let instance = self.pre.instantiate(&mut *store)?;
        // `balancer-info` and `decision` have the same shapes in every version, `needs` in 0.3.0
        // and 0.4.0.
        let (configure, select, sticky) = match self.shape {
            Shape::V4 => (
                *instance.get_typed_func::<(&wit::BalancerInfo,), ConfigureSig>(&mut *store, self.configure)?.func(),
                *instance
                    .get_typed_func::<(Option<&types::RequestView>, &StateRef<'_>), (wit::Decision,)>(
                        &mut *store,
                        self.select,
                    )?
                    .func(),
                *instance.get_typed_func::<(u32, &StateRef<'_>), (Vec<i64>,)>(&mut *store, self.sticky)?.func(),
            ),
            Shape::V3 => (
                *instance.get_typed_func::<(&wit::BalancerInfo,), ConfigureSig>(&mut *store, self.configure)?.func(),
                *instance
                    .get_typed_func::<(&types::RequestView, &wit3::State), (wit::Decision,)>(&mut *store, self.select)?
                    .func(),
                *instance.get_typed_func::<(u32, &wit3::State), (Vec<i64>,)>(&mut *store, self.sticky)?.func(),
            ),
            Shape::V2 => (
                *instance.get_typed_func::<(&wit::BalancerInfo,), ConfigureSigV2>(&mut *store, self.configure)?.func(),
                *instance
                    .get_typed_func::<(&types::RequestView, &wit2::State), (wit::Decision,)>(&mut *store, self.select)?
                    .func(),
                *instance.get_typed_func::<(u32, &wit2::State), (Vec<i64>,)>(&mut *store, self.sticky)?.func(),
            ),
        };
        Ok(SelectorPlugin { shape: self.shape, configure, select, sticky })
    }
}

/// An instance's typed `selector` functions.
pub struct SelectorPlugin {
    shape: Shape,
    configure: Func,
    select: Func,
    sticky: Func,
}

/// What `configure` answered.
enum Configured {
    Needs(SelectorNeeds),
    /// Needs the host cannot take (a header name that is not one).
    Invalid(String),
    /// The plugin refused the configuration.
    Refused(String),
}

/// The state handed to a call, in the shape of the plugin's version.
struct States {
    /// The columns of a 0.4.0-and-later call end to end, when it carries more than lbstatus.
    v4: Vec<i64>,
    /// Which columns the call carries ([`carried`]), worked out once with `v4`.
    v4_columns: wit::StateColumns,
    v3: wit3::State,
    v2: wit2::State,
}

/// The `state` record of `fulcrum:plugin@0.4.0` and later, borrowed: wasmtime copies the lists
/// straight from the balancer's candidate list and lbstatus column into the guest, with no copy on
/// the host first (over 1,000 members that copy was 12 KB per call). Its shape is checked against
/// the component's at instantiation ([`SelectorPre::instantiate`]), as the bindings' own.
#[derive(wasmtime::component::ComponentType, wasmtime::component::Lower)]
#[component(record)]
struct StateRef<'a> {
    candidates: &'a [u32],
    columns: wit::StateColumns,
    values: &'a [i64],
}

impl SelectorPlugin {
    fn call_configure(&self, store: &mut Store<StoreState>, info: &wit::BalancerInfo) -> wasmtime::Result<Configured> {
        // SAFETY: the signatures were checked when the instance was made ([`SelectorPre::instantiate`]).
        let answer = match self.shape {
            Shape::V3 | Shape::V4 => {
                let f = unsafe { TypedFunc::<(&wit::BalancerInfo,), ConfigureSig>::new_unchecked(self.configure) };
                f.call(&mut *store, (info,))?.0.map(|needs| convert_needs(needs.fields, &needs.headers, needs.columns))
            }
            Shape::V2 => {
                let f = unsafe { TypedFunc::<(&wit::BalancerInfo,), ConfigureSigV2>::new_unchecked(self.configure) };
                f.call(&mut *store, (info,))?.0.map(|needs| {
                    let c = needs.columns;
                    let mut columns = wit::StateColumns::empty();
                    for (old, new) in [
                        (wit2::StateColumns::LBSTATUS, wit::StateColumns::LBSTATUS),
                        (wit2::StateColumns::BUSY, wit::StateColumns::BUSY),
                        (wit2::StateColumns::TRAFFIC, wit::StateColumns::TRAFFIC),
                    ] {
                        if c.contains(old) {
                            columns |= new;
                        }
                    }
                    convert_needs(needs.fields, &needs.headers, columns)
                })
            }
        };
        Ok(match answer {
            Ok(Ok(needs)) => Configured::Needs(needs),
            Ok(Err(why)) => Configured::Invalid(why),
            Err(types::PluginError::InvalidOption((key, why))) => {
                Configured::Refused(format!("refused option `{key}`: {why}"))
            }
            Err(types::PluginError::Other(why)) => Configured::Refused(format!("refused its configuration: {why}")),
        })
    }

    fn call_select(
        &self,
        store: &mut Store<StoreState>,
        request: &types::RequestView,
        reads_request: bool,
        state: StateRef<'_>,
        states: &States,
    ) -> wasmtime::Result<wit::Decision> {
        // SAFETY: checked in [`SelectorPre::instantiate`].
        Ok(match self.shape {
            Shape::V4 => {
                let f = unsafe {
                    TypedFunc::<(Option<&types::RequestView>, &StateRef<'_>), (wit::Decision,)>::new_unchecked(
                        self.select,
                    )
                };
                // 0.4.0 passes the request only to selectors that read something of it.
                f.call(store, (reads_request.then_some(request), &state))?.0
            }
            Shape::V3 => {
                let f = unsafe {
                    TypedFunc::<(&types::RequestView, &wit3::State), (wit::Decision,)>::new_unchecked(self.select)
                };
                f.call(store, (request, &states.v3))?.0
            }
            Shape::V2 => {
                let f = unsafe {
                    TypedFunc::<(&types::RequestView, &wit2::State), (wit::Decision,)>::new_unchecked(self.select)
                };
                f.call(store, (request, &states.v2))?.0
            }
        })
    }

    fn call_sticky(
        &self,
        store: &mut Store<StoreState>,
        member: u32,
        state: StateRef<'_>,
        states: &States,
    ) -> wasmtime::Result<Vec<i64>> {
        // SAFETY: checked in [`SelectorPre::instantiate`].
        Ok(match self.shape {
            Shape::V4 => {
                let f = unsafe { TypedFunc::<(u32, &StateRef<'_>), (Vec<i64>,)>::new_unchecked(self.sticky) };
                f.call(store, (member, &state))?.0
            }
            Shape::V3 => {
                let f = unsafe { TypedFunc::<(u32, &wit3::State), (Vec<i64>,)>::new_unchecked(self.sticky) };
                f.call(store, (member, &states.v3))?.0
            }
            Shape::V2 => {
                let f = unsafe { TypedFunc::<(u32, &wit2::State), (Vec<i64>,)>::new_unchecked(self.sticky) };
                f.call(store, (member, &states.v2))?.0
            }
        })
    }
}

/// A selector plugin configured for one balancer.
pub struct WasmSelector {
    plugin: Arc<CompiledPlugin>,
    info: wit::BalancerInfo,
    needs: SelectorNeeds,
    limits: PluginLimits,
    live: Option<Live>,
    /// Reused for every call so the per-request path does not allocate the lists.
    states: States,
}

impl WasmSelector {
    pub fn new(
        plugin: Arc<CompiledPlugin>,
        spec: &BalancerSpec<'_>,
        limits: PluginLimits,
    ) -> Result<WasmSelector, Error> {
        if plugin.selector.is_none() {
            return Err(Error::msg(format!(
                "plugin `{}` ({}) is not a selector: it implements {}",
                plugin.info.name, plugin.info.origin, plugin.info.worlds
            )));
        }
        let info = wit::BalancerInfo {
            name: spec.name.to_string(),
            members: spec
                .members
                .iter()
                .map(|m| wit::Member {
                    name: m.url.clone(),
                    route: m.route.clone(),
                    lbfactor: m.lbfactor,
                    lbset: m.lbset,
                })
                .collect(),
            config: plugin_config(&plugin.info.name, spec.config),
        };
        let mut selector = WasmSelector {
            plugin,
            info,
            needs: SelectorNeeds::default(),
            limits,
            live: None,
            states: States {
                v4: Vec::new(),
                v4_columns: wit::StateColumns::empty(),
                v3: wit3::State {
                    candidates: Vec::new(),
                    lbstatus: Vec::new(),
                    busy: Vec::new(),
                    traffic: Vec::new(),
                    load: Vec::new(),
                },
                v2: wit2::State { candidates: Vec::new(), lbstatus: Vec::new(), busy: Vec::new(), traffic: Vec::new() },
            },
        };
        let (live, needs) = selector.instantiate().map_err(|fault| Error::msg(fault.detail))?;
        selector.needs = needs;
        selector.live = Some(live);
        Ok(selector)
    }

    /// A fresh instance, configured with this balancer. Errors name the plugin.
    fn instantiate(&self) -> Result<(Live, SelectorNeeds), SelectorFault> {
        let name = &self.plugin.name;
        let setup = |detail: String| SelectorFault { plugin: name.to_string(), kind: FaultKind::Setup, detail };
        let pre = self.plugin.selector.as_ref().ok_or_else(|| setup("not a selector".into()))?;
        let mut store = store::new_store(name, &self.limits);
        let bindings =
            pre.instantiate(&mut store).map_err(|e| setup(format!("plugin `{name}`: instantiation failed: {e:#}")))?;
        let answer = bindings
            .call_configure(&mut store, &self.info)
            .map_err(|e| setup(format!("plugin `{name}`: configure trapped: {}", super::trap_detail(name, &e))))?;
        let needs = match answer {
            Configured::Needs(needs) => needs,
            Configured::Invalid(why) => return Err(setup(format!("plugin `{name}`: configure answered {why}"))),
            Configured::Refused(why) => return Err(setup(format!("plugin `{name}` {why}"))),
        };
        Ok((Live::new(store, bindings), needs))
    }

    /// Run one call on the warm instance (rebuilding it first if the last call killed it), under
    /// the call deadline ([`super::call::call`]). Any error discards the instance.
    fn call<R>(
        &mut self,
        request_id: u64,
        f: impl FnOnce(&mut Store<StoreState>, &SelectorPlugin, &States) -> wasmtime::Result<R>,
    ) -> Result<R, SelectorFault> {
        let live = self.live.take();
        let (answer, live) = super::call::call(
            &self.plugin.name,
            &self.limits,
            request_id,
            live,
            || self.instantiate().map(|(live, _)| live).map_err(|fault| fault.detail),
            |store, bindings| f(store, bindings, &self.states),
        );
        self.live = live;
        answer
    }

    fn load_state(&mut self, state: &SelectState<'_>) {
        let Some(shape) = self.plugin.selector.as_ref().map(|pre| pre.shape) else { return };
        macro_rules! fill {
            ($s:expr) => {{
                let s = $s;
                s.candidates.clear();
                s.candidates.extend_from_slice(state.candidates);
                s.lbstatus.clear();
                s.lbstatus.extend_from_slice(state.lbstatus);
                s.busy.clear();
                s.busy.extend_from_slice(state.busy);
                s.traffic.clear();
                s.traffic.extend_from_slice(state.traffic);
            }};
        }
        match shape {
            Shape::V4 => {
                self.states.v4_columns = carried(self.needs.columns, state);
                pack_values(&mut self.states.v4, self.states.v4_columns, state);
            }
            Shape::V3 => {
                fill!(&mut self.states.v3);
                let load = &mut self.states.v3.load;
                load.clear();
                load.extend(
                    state.load.iter().map(|r| r.map(|LoadReport { busy, ready }| wit3::LoadReport { busy, ready })),
                );
            }
            Shape::V2 => fill!(&mut self.states.v2),
        }
    }

    /// The request as the selector declared it (empty, without allocating, when it declared
    /// nothing of it), and whether it declared anything.
    fn request_view(&self, request: &RequestInfo<'_>) -> (types::RequestView, bool) {
        let reads = self.needs.fields != RequestFields::default() || !self.needs.headers.is_empty();
        (super::request_view(self.needs.fields, &self.needs.headers, request), reads)
    }
}

impl MemberSelector for WasmSelector {
    fn name(&self) -> &str {
        &self.plugin.name
    }

    fn needs(&self) -> &SelectorNeeds {
        &self.needs
    }

    fn select(&mut self, request: &RequestInfo<'_>, state: &SelectState<'_>) -> Result<Selection, SelectorFault> {
        let (view, reads) = self.request_view(request);
        self.load_state(state);
        let decision =
            self.call(request.id, |store, b, s| b.call_select(store, &view, reads, state_ref(state, s), s))?;
        Ok(Selection { member: decision.member, lbstatus: decision.lbstatus })
    }

    fn sticky(
        &mut self,
        request: &RequestInfo<'_>,
        member: u32,
        state: &SelectState<'_>,
    ) -> Result<Vec<i64>, SelectorFault> {
        self.load_state(state);
        self.call(request.id, |store, b, s| b.call_sticky(store, member, state_ref(state, s), s))
    }
}

/// The columns of the 0.4.0 state: those the selector declared and `state` carries (`sticky`
/// carries only lbstatus).
fn carried(declared: StateColumns, state: &SelectState<'_>) -> wit::StateColumns {
    let mut columns = wit::StateColumns::empty();
    for (on, values, column) in [
        (declared.lbstatus, state.lbstatus.len(), wit::StateColumns::LBSTATUS),
        (declared.busy, state.busy.len(), wit::StateColumns::BUSY),
        (declared.traffic, state.traffic.len(), wit::StateColumns::TRAFFIC),
        (declared.load, state.load.len(), wit::StateColumns::LOAD),
    ] {
        if on && values > 0 {
            columns |= column;
        }
    }
    columns
}

/// The 0.4.0 state's values, when they are more than the lbstatus column: the `columns` end to
/// end in one list, in the WIT's order, each with one value per member. Left empty when lbstatus
/// is all, which [`state_ref`] then lends as it is.
fn pack_values(packed: &mut Vec<i64>, columns: wit::StateColumns, state: &SelectState<'_>) {
    fn count(n: u64) -> i64 {
        i64::try_from(n).unwrap_or(i64::MAX)
    }
    packed.clear();
    if columns == wit::StateColumns::LBSTATUS {
        return;
    }
    if columns.contains(wit::StateColumns::LBSTATUS) {
        packed.extend_from_slice(state.lbstatus);
    }
    if columns.contains(wit::StateColumns::BUSY) {
        packed.extend(state.busy.iter().map(|&n| count(n)));
    }
    if columns.contains(wit::StateColumns::TRAFFIC) {
        packed.extend(state.traffic.iter().map(|&n| count(n)));
    }
    if columns.contains(wit::StateColumns::LOAD) {
        packed.extend(state.load.iter().map(|r| r.map_or(-1, |r| (i64::from(r.busy) << 32) | i64::from(r.ready))));
    }
}

/// The 0.4.0 `state` of a call: the candidates and, when lbstatus is the only column, the lbstatus
/// column lent as they are; otherwise the values [`pack_values`] put end to end, with the columns
/// `load_state` worked out for them. (The older shapes pass their own state and leave this unused.)
fn state_ref<'a>(state: &SelectState<'a>, states: &'a States) -> StateRef<'a> {
    let columns = states.v4_columns;
    let values = if columns == wit::StateColumns::LBSTATUS { state.lbstatus } else { states.v4.as_slice() };
    StateRef { candidates: state.candidates, columns, values }
}

fn convert_needs(
    fields: types::RequestFields,
    headers: &[String],
    c: wit::StateColumns,
) -> Result<SelectorNeeds, String> {
    Ok(SelectorNeeds {
        fields: super::convert_fields(fields),
        headers: super::header_names(headers)?,
        columns: StateColumns {
            lbstatus: c.contains(wit::StateColumns::LBSTATUS),
            busy: c.contains(wit::StateColumns::BUSY),
            traffic: c.contains(wit::StateColumns::TRAFFIC),
            load: c.contains(wit::StateColumns::LOAD),
        },
    })
}

/// The plugin's TOML table as the WIT `plugin-config`.
pub fn plugin_config(name: &str, table: &toml::Table) -> types::PluginConfig {
    let options = table
        .iter()
        .filter_map(|(k, v)| {
            let text = match v {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(_)
                | toml::Value::Float(_)
                | toml::Value::Boolean(_)
                | toml::Value::Datetime(_) => v.to_string(),
                toml::Value::Array(_) | toml::Value::Table(_) => return None,
            };
            Some((k.clone(), text))
        })
        .collect();
    types::PluginConfig { name: name.to_string(), options, toml: toml::to_string(table).unwrap_or_default() }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::balancer::byrequests::NativeByRequests;
    use crate::balancer::{Balancer, BalancerSpec, ClientAddr, MemberStatus, RequestInfo, SelectorFactory};
    use crate::config::Config;
    use crate::plugin::{PluginLimits, PluginRegistry};

    /// The 0.4.0 state: the declared columns that the call carries, end to end in the WIT's order
    /// (lbstatus, busy, traffic, load), a load report as `busy * 2^32 + ready` or -1; a column
    /// not declared, or not carried (`sticky` carries only lbstatus), is left out.
    #[test]
    fn the_state_is_packed_in_the_wits_order() {
        use super::{pack_values, wit};
        use crate::balancer::{LoadReport, SelectState, StateColumns};
        let load = [Some(LoadReport { busy: 3, ready: 7 }), None];
        let full = SelectState {
            candidates: &[0, 1],
            lbstatus: &[-5, 5],
            busy: &[1, 2],
            traffic: &[100, u64::MAX],
            load: &load,
        };
        let mut packed = Vec::new();
        let all = StateColumns { lbstatus: true, busy: true, traffic: true, load: true };
        let columns = super::carried(all, &full);
        assert_eq!(columns, wit::StateColumns::all());
        pack_values(&mut packed, columns, &full);
        assert_eq!(packed, [-5, 5, 1, 2, 100, i64::MAX, (3 << 32) | 7, -1]);

        let some = StateColumns { lbstatus: false, busy: true, traffic: false, load: true };
        let columns = super::carried(some, &full);
        assert_eq!(columns, wit::StateColumns::BUSY | wit::StateColumns::LOAD);
        pack_values(&mut packed, columns, &full);
        assert_eq!(packed, [1, 2, (3 << 32) | 7, -1]);

        // lbstatus alone is lent as it is, not packed.
        let sticky = SelectState { candidates: &[1], lbstatus: &[-5, 5], busy: &[], traffic: &[], load: &[] };
        let columns = super::carried(all, &sticky);
        assert_eq!(columns, wit::StateColumns::LBSTATUS);
        pack_values(&mut packed, columns, &sticky);
        assert!(packed.is_empty());
    }

    /// xorshift64: a fixed, dependency-free sequence of operations.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// The embedded Wasm `byrequests` and the native reference give the same member and the same
    /// lbstatus after every step of random sequences: balanced and sticky requests, members put
    /// in error, disabled and enabled again, over 2 to 6 members of random loadfactors, and in
    /// every fourth round 7 to 66 (the plugin sweeps every member sixteen at a time, in SIMD
    /// vectors, when all of them are candidates: no block, several, and every remainder).
    #[test]
    fn wasm_byrequests_matches_the_native_reference() {
        let registry = PluginRegistry::load(None, PluginLimits::default()).expect("built-in plugins");
        let (method, uri, headers, client) = (
            hyper::Method::GET,
            hyper::Uri::from_static("/"),
            hyper::HeaderMap::new(),
            ClientAddr::from([127, 0, 0, 1]),
        );
        let request = RequestInfo { id: 1, method: &method, uri: &uri, headers: &headers, client: &client, host: "b" };
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut chosen = 0;
        for round in 0..40 {
            let n = if round % 4 == 3 { 7 + rng.below(60) } else { 2 + rng.below(5) } as usize;
            let mut text = String::from(
                "listen = [\"127.0.0.1:0\"]\n[[vhost]]\nserver_name = \"b\"\n\
                 proxy_pass = [{ path = \"/\", to = \"balancer://b/\" }]\n[balancer.b]\nforcerecovery = false\n",
            );
            for i in 0..n {
                text.push_str(&format!(
                    "[[balancer.b.member]]\nurl = \"http://10.0.0.{i}:80\"\nloadfactor = {}\nretry = 3600\n",
                    1 + rng.below(5)
                ));
            }
            let config = Config::parse(&text, std::path::Path::new("t.toml")).unwrap().balancers.remove(0);
            let spec = BalancerSpec::lbmethod(&config);
            let wasm = Arc::new(Balancer::new(&config, registry.selector(&spec).expect("byrequests")));
            let native = Arc::new(Balancer::new(&config, Box::new(NativeByRequests::new(&spec))));
            for step in 0..60 {
                let member = rng.below(n as u64) as usize;
                let op = rng.below(10);
                let results: Vec<Option<usize>> = [&wasm, &native]
                    .iter()
                    .map(|b| match op {
                        0 => {
                            b.mark_error(member);
                            None
                        }
                        1 => {
                            let status = b.members[member].status();
                            b.members[member].set_status(
                                status.with(MemberStatus::DISABLED, !status.contains(MemberStatus::DISABLED)),
                            );
                            None
                        }
                        2 | 3 => b.choose_sticky(&request, member).expect("sticky").map(|lease| lease.index()),
                        _ => b.choose(&request, &[]).ok().map(|lease| lease.index()),
                    })
                    .collect();
                assert_eq!(results[0], results[1], "round {round} step {step} (op {op}, member {member})");
                chosen += usize::from(results[0].is_some());
                assert_eq!(wasm.lbstatus(), native.lbstatus(), "round {round} step {step} (op {op}, member {member})");
            }
        }
        assert!(chosen > 1000, "only {chosen} of 2400 steps chose a member: the sequences test too little");
    }

    /// A selection's memory is given back: 100,000 balanced and sticky choices of the embedded
    /// `byrequests` over 3 members on one instance capped at 4 MiB, never recycled. A plugin
    /// allocator that kept even a few bytes per call would reach the cap and fault.
    #[test]
    fn wasm_byrequests_runs_in_constant_memory() {
        let limits = PluginLimits { memory_bytes: 4 << 20, recycle_after: None, ..PluginLimits::default() };
        let registry = PluginRegistry::load(None, limits).expect("built-in plugins");
        let (method, uri, headers, client) = (
            hyper::Method::GET,
            hyper::Uri::from_static("/"),
            hyper::HeaderMap::new(),
            ClientAddr::from([127, 0, 0, 1]),
        );
        let request = RequestInfo { id: 1, method: &method, uri: &uri, headers: &headers, client: &client, host: "b" };
        let mut text = String::from(
            "listen = [\"127.0.0.1:0\"]\n[[vhost]]\nserver_name = \"b\"\n\
             proxy_pass = [{ path = \"/\", to = \"balancer://b/\" }]\n[balancer.b]\n",
        );
        for (i, factor) in [1, 2, 3].iter().enumerate() {
            text.push_str(&format!("[[balancer.b.member]]\nurl = \"http://10.0.0.{i}:80\"\nloadfactor = {factor}\n"));
        }
        let config = Config::parse(&text, std::path::Path::new("t.toml")).unwrap().balancers.remove(0);
        let spec = BalancerSpec::lbmethod(&config);
        let balancer = Arc::new(Balancer::new(&config, registry.selector(&spec).expect("byrequests")));
        for i in 0..100_000 {
            let chosen = if i % 5 == 0 {
                balancer.choose_sticky(&request, i % 3).expect("sticky").map(|lease| lease.index())
            } else {
                balancer.choose(&request, &[]).ok().map(|lease| lease.index())
            };
            assert!(chosen.is_some(), "call {i}: no member");
        }
    }
}
