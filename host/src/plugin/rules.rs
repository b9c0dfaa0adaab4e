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

type Live = super::call::Instance<RulesPlugin>;

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
        Ok((Live::new(store, bindings), needs))
    }

    /// Run `f` on a warm instance under the call deadline ([`super::call::call`], as selectors
    /// are run); a failed instance is dropped.
    fn call<R>(
        &self,
        request_id: u64,
        f: impl FnOnce(&mut Store<StoreState>, &RulesPlugin) -> wasmtime::Result<R>,
    ) -> Result<R, RulesFault> {
        let idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let (answer, live) = super::call::call(
            &self.plugin.name,
            &self.limits,
            request_id,
            idle,
            || self.instantiate().map(|(live, _)| live).map_err(|e| e.message),
            f,
        );
        if let Some(live) = live {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            if idle.len() < MAX_IDLE {
                idle.push(live);
            }
        }
        // The request goes on without the rules' actions; the proxy logs why with its id.
        answer.map_err(|fault| RulesFault {
            plugin: fault.plugin,
            detail: format!("{}: {}", fault.kind.what(), fault.detail),
        })
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
