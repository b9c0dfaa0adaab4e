//! [`WasmSelector`]: a selector-world component behind the core's [`MemberSelector`] trait.

use std::sync::Arc;

use wasmtime::Store;

use super::PluginLimits;
use super::bindings::selector_world::SelectorPlugin;
use super::bindings::selector_world::exports::fulcrum::plugin::selector as wit;
use super::bindings::types;
use super::registry::CompiledPlugin;
use super::store::{self, StoreState};
use crate::Error;
use crate::balancer::{
    BalancerSpec, FaultKind, MemberSelector, RequestInfo, SelectState, Selection, SelectorFault, SelectorNeeds,
    StateColumns,
};

/// One warm instance: its store and its typed exports.
type Live = super::call::Instance<SelectorPlugin>;

/// A selector plugin configured for one balancer.
pub struct WasmSelector {
    plugin: Arc<CompiledPlugin>,
    info: wit::BalancerInfo,
    needs: SelectorNeeds,
    limits: PluginLimits,
    live: Option<Live>,
    /// Reused for every call so the per-request path does not allocate the lists.
    state: wit::State,
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
            state: wit::State { candidates: Vec::new(), lbstatus: Vec::new(), busy: Vec::new(), traffic: Vec::new() },
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
            .fulcrum_plugin_selector()
            .call_configure(&mut store, &self.info)
            .map_err(|e| setup(format!("plugin `{name}`: configure trapped: {}", super::trap_detail(name, &e))))?;
        let needs = match answer {
            Ok(needs) => {
                convert_needs(needs).map_err(|why| setup(format!("plugin `{name}`: configure answered {why}")))?
            }
            Err(types::PluginError::InvalidOption((key, why))) => {
                return Err(setup(format!("plugin `{name}` refused option `{key}`: {why}")));
            }
            Err(types::PluginError::Other(why)) => {
                return Err(setup(format!("plugin `{name}` refused its configuration: {why}")));
            }
        };
        Ok((Live::new(store, bindings), needs))
    }

    /// Run one call on the warm instance (rebuilding it first if the last call killed it), under
    /// the call deadline ([`super::call::call`]). Any error discards the instance.
    fn call<R>(
        &mut self,
        request_id: u64,
        f: impl FnOnce(&mut Store<StoreState>, &SelectorPlugin, &wit::State) -> wasmtime::Result<R>,
    ) -> Result<R, SelectorFault> {
        let live = self.live.take();
        let (answer, live) = super::call::call(
            &self.plugin.name,
            &self.limits,
            request_id,
            live,
            || self.instantiate().map(|(live, _)| live).map_err(|fault| fault.detail),
            |store, bindings| f(store, bindings, &self.state),
        );
        self.live = live;
        answer
    }

    fn load_state(&mut self, state: &SelectState<'_>) {
        let s = &mut self.state;
        s.candidates.clear();
        s.candidates.extend_from_slice(state.candidates);
        s.lbstatus.clear();
        s.lbstatus.extend_from_slice(state.lbstatus);
        s.busy.clear();
        s.busy.extend_from_slice(state.busy);
        s.traffic.clear();
        s.traffic.extend_from_slice(state.traffic);
    }

    fn request_view(&self, request: &RequestInfo<'_>) -> types::RequestView {
        super::request_view(self.needs.fields, &self.needs.headers, request)
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
        let view = self.request_view(request);
        self.load_state(state);
        let decision = self.call(request.id, |store, b, s| b.fulcrum_plugin_selector().call_select(store, &view, s))?;
        Ok(Selection { member: decision.member, lbstatus: decision.lbstatus })
    }

    fn sticky(
        &mut self,
        request: &RequestInfo<'_>,
        member: u32,
        state: &SelectState<'_>,
    ) -> Result<Vec<i64>, SelectorFault> {
        self.load_state(state);
        self.call(request.id, |store, b, s| b.fulcrum_plugin_selector().call_sticky(store, member, s))
    }
}

fn convert_needs(needs: wit::Needs) -> Result<SelectorNeeds, String> {
    let c = needs.columns;
    Ok(SelectorNeeds {
        fields: super::convert_fields(needs.fields),
        headers: super::header_names(&needs.headers)?,
        columns: StateColumns {
            lbstatus: c.contains(wit::StateColumns::LBSTATUS),
            busy: c.contains(wit::StateColumns::BUSY),
            traffic: c.contains(wit::StateColumns::TRAFFIC),
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
