//! [`WasmRules`]: a rules-world component behind the core's [`RequestRules`] trait.
//!
//! Rules keep no per-request state, so one rule set serves concurrent requests from a small pool
//! of warm instances (each configured once); a trapped instance is dropped, not returned.

use std::sync::{Arc, Mutex, PoisonError};

use wasmtime::Store;

use super::bindings::rules_world::RulesPlugin;
use super::bindings::rules_world::exports::fulcrum::plugin::rules as wit;
use super::bindings::types;
use super::registry::CompiledPlugin;
use super::store::{self, StoreState};
use super::{PluginLimits, request_view};
use crate::balancer::RequestInfo;
use crate::proxy::rules::{
    Env, HeaderAction, HeaderOp, Origin, RequestRules, ResponseInfo, RulesFault, RulesNeeds, RulesOutcome,
    RulesSetupError,
};

/// Warm instances kept per rule set; more are dropped after use.
const MAX_IDLE: usize = 64;

struct Live {
    store: Store<StoreState>,
    /// Calls served, for `recycle_after_calls`.
    calls: u64,
    bindings: RulesPlugin,
}

pub struct WasmRules {
    plugin: Arc<CompiledPlugin>,
    config: types::PluginConfig,
    needs: RulesNeeds,
    limits: PluginLimits,
    idle: Mutex<Vec<Live>>,
}

impl WasmRules {
    pub fn new(
        plugin: Arc<CompiledPlugin>,
        config: types::PluginConfig,
        limits: PluginLimits,
    ) -> Result<WasmRules, RulesSetupError> {
        let setup = |message: String| RulesSetupError { option: None, line: None, message };
        if plugin.rules.is_none() {
            return Err(setup(format!(
                "plugin `{}` ({}) is not a rules plugin: it implements {}",
                plugin.info.name, plugin.info.origin, plugin.info.worlds
            )));
        }
        let mut rules =
            WasmRules { plugin, config, needs: RulesNeeds::default(), limits, idle: Mutex::new(Vec::new()) };
        let (live, needs) = rules.instantiate()?;
        rules.needs = needs;
        rules.idle.get_mut().unwrap_or_else(PoisonError::into_inner).push(live);
        Ok(rules)
    }

    fn instantiate(&self) -> Result<(Live, RulesNeeds), RulesSetupError> {
        let name = &self.plugin.name;
        let setup = |message: String| RulesSetupError { option: None, line: None, message };
        let pre = self.plugin.rules.as_ref().ok_or_else(|| setup("not a rules plugin".into()))?;
        let mut store = store::new_store(name, &self.limits);
        let bindings =
            pre.instantiate(&mut store).map_err(|e| setup(format!("plugin `{name}`: instantiation failed: {e:#}")))?;
        let answer = bindings
            .fulcrum_plugin_rules()
            .call_configure(&mut store, &self.config)
            .map_err(|e| setup(format!("plugin `{name}`: configure trapped: {}", super::trap_detail(name, &e))))?;
        let needs = match answer {
            Ok(needs) => {
                convert_needs(needs).map_err(|why| setup(format!("plugin `{name}`: configure answered {why}")))?
            }
            Err(types::PluginError::InvalidOption((option, why))) => {
                let line = why
                    .strip_prefix("line ")
                    .and_then(|rest| rest.split_once(':'))
                    .and_then(|(n, _)| n.trim().parse::<usize>().ok());
                return Err(RulesSetupError { option: Some(option), line, message: format!("plugin `{name}`: {why}") });
            }
            Err(types::PluginError::Other(why)) => return Err(setup(format!("plugin `{name}`: {why}"))),
        };
        Ok((Live { store, calls: 0, bindings }, needs))
    }

    /// Run `f` on a warm instance under the call deadline; a failed instance is dropped.
    fn call<R>(
        &self,
        request_id: u64,
        f: impl FnOnce(&mut Store<StoreState>, &RulesPlugin) -> wasmtime::Result<R>,
    ) -> Result<R, RulesFault> {
        let fault = |detail: String| RulesFault { plugin: self.plugin.name.to_string(), detail };
        let idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let mut live = match idle {
            Some(live) => live,
            None => {
                self.instantiate()
                    .map_err(|e| {
                        crate::admin::count_fault(&self.plugin.name, "setup");
                        fault(e.message)
                    })?
                    .0
            }
        };
        store::start_call(&mut live.store, self.limits.call_deadline);
        live.store.data_mut().request_id = request_id;
        match f(&mut live.store, &live.bindings) {
            Ok(r) => {
                live.calls += 1;
                let worn_out = self.limits.recycle_after.is_some_and(|n| live.calls >= n);
                let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
                if idle.len() < MAX_IDLE && !worn_out {
                    idle.push(live);
                }
                Ok(r)
            }
            Err(e) => {
                let kind = if super::ungranted_wasi_call(&e).is_some() { "not-granted" } else { "trap" };
                crate::admin::count_fault(&self.plugin.name, kind);
                Err(fault(super::trap_detail(&self.plugin.name, &e)))
            }
        }
    }

    fn request(&self, request: &RequestInfo<'_>) -> types::RequestView {
        request_view(self.needs.fields, &self.needs.request_headers, request)
    }
}

impl RequestRules for WasmRules {
    fn name(&self) -> &str {
        &self.plugin.name
    }

    fn needs(&self) -> &RulesNeeds {
        &self.needs
    }

    fn on_request(&self, request: &RequestInfo<'_>, env: &Env) -> Result<RulesOutcome, RulesFault> {
        let view = self.request(request);
        let outcome =
            self.call(request.id, |store, b| b.fulcrum_plugin_rules().call_on_request(store, &view, env.vars()))?;
        Ok(convert_outcome(outcome))
    }

    fn on_response(
        &self,
        request: &RequestInfo<'_>,
        response: &ResponseInfo<'_>,
        env: &Env,
    ) -> Result<RulesOutcome, RulesFault> {
        let view = self.request(request);
        let mut headers = Vec::new();
        for name in &self.needs.response_headers {
            for value in response.headers.get_all(name) {
                headers.push((name.as_str().to_string(), String::from_utf8_lossy(value.as_bytes()).into_owned()));
            }
        }
        let response = wit::ResponseView {
            status: response.status,
            origin: match response.origin {
                Origin::Proxied => wit::ResponseOrigin::Proxied,
                Origin::Generated => wit::ResponseOrigin::Generated,
            },
            headers,
        };
        let outcome = self.call(request.id, |store, b| {
            b.fulcrum_plugin_rules().call_on_response(store, &view, &response, env.vars())
        })?;
        Ok(convert_outcome(outcome))
    }
}

fn convert_outcome(outcome: wit::Outcome) -> RulesOutcome {
    RulesOutcome {
        env: outcome.env.into_iter().map(|a| (a.name, a.value)).collect(),
        headers: outcome
            .headers
            .into_iter()
            .map(|h| HeaderAction {
                op: match h.op {
                    wit::HeaderOp::Set => HeaderOp::Set,
                    wit::HeaderOp::Append => HeaderOp::Append,
                    wit::HeaderOp::Add => HeaderOp::Add,
                    wit::HeaderOp::Unset => HeaderOp::Unset,
                    wit::HeaderOp::Merge => HeaderOp::Merge,
                    wit::HeaderOp::SetIfEmpty => HeaderOp::SetIfEmpty,
                },
                name: h.name,
                value: h.value,
            })
            .collect(),
    }
}

fn convert_needs(needs: wit::Needs) -> Result<RulesNeeds, String> {
    Ok(RulesNeeds {
        fields: super::convert_fields(needs.fields),
        request_headers: super::header_names(&needs.request_headers)?,
        response_headers: super::header_names(&needs.response_headers)?,
    })
}

/// The rule set for a plugin and its configuration table.
pub fn build(
    plugin: Arc<CompiledPlugin>,
    table: &toml::Table,
    limits: PluginLimits,
) -> Result<WasmRules, RulesSetupError> {
    let config = super::selector::plugin_config(&plugin.info.name, table);
    WasmRules::new(plugin, config, limits)
}
