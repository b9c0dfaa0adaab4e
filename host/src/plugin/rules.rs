//! [`WasmRules`]: a rules-world component behind the core's [`RequestRules`] trait.
//!
//! Rules keep no per-request state, so one rule set serves concurrent requests from a small pool
//! of warm instances (each configured once); a trapped instance is dropped, not returned.
//!
//! Two interface shapes are spoken. `fulcrum:plugin@0.4.0` (`wit/rules.wit`), `@0.3.0` and
//! `@0.2.0`, whose `rules` interfaces are the same: the names are
//! declared once, at configure (header names parsed here, then), and per call only the values
//! cross, end to end in one string plus a list of lengths built into a reused buffer; the answers
//! name headers and variables by index, checked here. `fulcrum:plugin@0.1.0`
//! (`host/wit-0.1.0/rules.wit`), for plugins built before it: the request view and the whole env as
//! strings, the clock as two env entries, actions by name, as that version did.

use std::cell::RefCell;
use std::sync::{Arc, Mutex, PoisonError};

use hyper::header::{HeaderMap, HeaderName};
use wasmtime::Store;
use wasmtime::component::{ComponentExportIndex, Func, InstancePre, TypedFunc};

use super::bindings::rules_world::exports::fulcrum::plugin::rules as wit;
use super::bindings::types;
use super::bindings::v0_1;
use super::bindings::v0_1::exports::fulcrum::plugin::rules as wit1;
use super::registry::{CompiledPlugin, RulesPre};
use super::store::{self, StoreState};
use super::{PluginLimits, request_view};
use crate::balancer::RequestInfo;
use crate::rules::{
    Clock, Env, HeaderAction, HeaderOp, Origin, RequestRules, ResponseInfo, RulesFault, RulesNeeds, RulesOutcome,
    RulesSetupError,
};

/// Warm instances kept per rule set; more are dropped after use.
const MAX_IDLE: usize = 64;

/// The reserved env entries a `fulcrum:plugin@0.1.0` plugin gets the clock in (microseconds
/// since the Unix epoch), as that version's host passed them.
const V1_REQUEST_START_VAR: &str = "FULCRUM_REQUEST_START_US";
const V1_NOW_VAR: &str = "FULCRUM_NOW_US";

/// An inputs buffer larger than this is not kept for the next call.
const MAX_KEPT_INPUTS: usize = 64 * 1024;

thread_local! {
    /// The inputs block of 0.2.0 calls, reused: filling it allocates nothing once warm.
    static INPUTS: RefCell<wit::Inputs> = const { RefCell::new(wit::Inputs { text: String::new(), lengths: Vec::new() }) };
}

/// An instance's typed exports, by version.
pub enum Bindings {
    V2(RulesFuncs),
    V1(v0_1::RulesPlugin),
}

type ConfigureSig = (Result<wit::Needs, types::PluginError>,);
type OnRequestSig = (wit::Outcome,);

/// A rules component of the 0.2.0 shapes (`fulcrum:plugin@0.2.0`, `@0.3.0` and `@0.4.0`, whose
/// `rules` interfaces are the same) ready to instantiate: its `rules` export found at the version the
/// component was built for.
#[derive(Clone)]
pub struct RulesPreV2 {
    pre: InstancePre<StoreState>,
    configure: ComponentExportIndex,
    on_request: ComponentExportIndex,
    on_response: ComponentExportIndex,
}

impl RulesPreV2 {
    /// Find `fulcrum:plugin/rules@{version}` and its functions (their types are checked at
    /// instantiation, which `configure` does at load).
    pub fn new(pre: InstancePre<StoreState>, version: &str) -> wasmtime::Result<RulesPreV2> {
        let [configure, on_request, on_response] =
            super::export_functions(&pre, "rules", version, ["configure", "on-request", "on-response"])?;
        Ok(RulesPreV2 { pre, configure, on_request, on_response })
    }

    /// A new instance, its functions type-checked.
    fn instantiate(&self, store: &mut Store<StoreState>) -> wasmtime::Result<RulesFuncs> {
        let instance = self.pre.instantiate(&mut *store)?;
        let configure =
            *instance.get_typed_func::<(&types::PluginConfig,), ConfigureSig>(&mut *store, self.configure)?.func();
        let on_request =
            *instance.get_typed_func::<(&wit::Inputs, wit::Clock), OnRequestSig>(&mut *store, self.on_request)?.func();
        let on_response = *instance
            .get_typed_func::<(u16, wit::ResponseOrigin, &wit::Inputs, wit::Clock), OnRequestSig>(
                &mut *store,
                self.on_response,
            )?
            .func();
        Ok(RulesFuncs { configure, on_request, on_response })
    }
}

/// An instance's typed `rules` functions (0.2.0 shapes).
pub struct RulesFuncs {
    configure: Func,
    on_request: Func,
    on_response: Func,
}

impl RulesFuncs {
    fn call_configure(
        &self,
        store: &mut Store<StoreState>,
        config: &types::PluginConfig,
    ) -> wasmtime::Result<Result<wit::Needs, types::PluginError>> {
        // SAFETY: the signature was checked when the instance was made ([`RulesPreV2::instantiate`]).
        let f = unsafe { TypedFunc::<(&types::PluginConfig,), ConfigureSig>::new_unchecked(self.configure) };
        Ok(f.call(store, (config,))?.0)
    }

    fn call_on_request(
        &self,
        store: &mut Store<StoreState>,
        inputs: &wit::Inputs,
        clock: wit::Clock,
    ) -> wasmtime::Result<wit::Outcome> {
        // SAFETY: checked in [`RulesPreV2::instantiate`].
        let f = unsafe { TypedFunc::<(&wit::Inputs, wit::Clock), OnRequestSig>::new_unchecked(self.on_request) };
        Ok(f.call(store, (inputs, clock))?.0)
    }

    fn call_on_response(
        &self,
        store: &mut Store<StoreState>,
        status: u16,
        origin: wit::ResponseOrigin,
        inputs: &wit::Inputs,
        clock: wit::Clock,
    ) -> wasmtime::Result<wit::Outcome> {
        // SAFETY: checked in [`RulesPreV2::instantiate`].
        let f = unsafe {
            TypedFunc::<(u16, wit::ResponseOrigin, &wit::Inputs, wit::Clock), OnRequestSig>::new_unchecked(
                self.on_response,
            )
        };
        Ok(f.call(store, (status, origin, inputs, clock))?.0)
    }
}

type Live = super::call::Instance<Bindings>;

/// A 0.2.0 plugin's declared names: the slots of its inputs and the targets of its actions.
#[derive(Debug, Default)]
struct Slots {
    env: Vec<Arc<str>>,
    /// Parsed once; a name that is not a header name refuses every action on it (logged).
    targets: Vec<Result<HeaderName, String>>,
}

pub struct WasmRules {
    plugin: Arc<CompiledPlugin>,
    config: types::PluginConfig,
    needs: RulesNeeds,
    slots: Slots,
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
        let mut rules = WasmRules {
            plugin,
            config,
            needs: RulesNeeds::default(),
            slots: Slots::default(),
            limits,
            idle: Mutex::new(Vec::new()),
        };
        let (live, needs, slots) = rules.instantiate()?;
        rules.needs = needs;
        rules.slots = slots;
        rules.idle.get_mut().unwrap_or_else(PoisonError::into_inner).push(live);
        Ok(rules)
    }

    fn instantiate(&self) -> Result<(Live, RulesNeeds, Slots), RulesSetupError> {
        let name = &self.plugin.name;
        let setup = |message: String| RulesSetupError { option: None, line: None, message };
        let pre = self.plugin.rules.as_ref().ok_or_else(|| setup("not a rules plugin".into()))?;
        let mut store = store::new_store(name, &self.limits);
        let instantiation_failed = |e: wasmtime::Error| setup(format!("plugin `{name}`: instantiation failed: {e:#}"));
        let trapped =
            |e: wasmtime::Error| setup(format!("plugin `{name}`: configure trapped: {}", super::trap_detail(name, &e)));
        let answered = |why: String| setup(format!("plugin `{name}`: configure answered {why}"));
        let (bindings, answer) = match pre {
            RulesPre::V2(pre) => {
                let bindings = pre.instantiate(&mut store).map_err(instantiation_failed)?;
                let answer = bindings.call_configure(&mut store, &self.config).map_err(trapped)?;
                (Bindings::V2(bindings), answer.map(Declared::V2))
            }
            RulesPre::V1(pre) => {
                let bindings = pre.instantiate(&mut store).map_err(instantiation_failed)?;
                let answer =
                    bindings.fulcrum_plugin_rules().call_configure(&mut store, &self.config).map_err(trapped)?;
                (Bindings::V1(bindings), answer.map(Declared::V1))
            }
        };
        let (needs, slots) = match answer {
            Ok(Declared::V2(needs)) => convert_needs(needs).map_err(answered)?,
            Ok(Declared::V1(needs)) => (convert_needs_v1(needs).map_err(answered)?, Slots::default()),
            Err(types::PluginError::InvalidOption((option, why))) => {
                let line = why
                    .strip_prefix("line ")
                    .and_then(|rest| rest.split_once(':'))
                    .and_then(|(n, _)| n.trim().parse::<usize>().ok());
                return Err(RulesSetupError { option: Some(option), line, message: format!("plugin `{name}`: {why}") });
            }
            Err(types::PluginError::Other(why)) => return Err(setup(format!("plugin `{name}`: {why}"))),
        };
        Ok((Live::new(store, bindings), needs, slots))
    }

    /// Run `f` on a warm instance under the call deadline ([`super::call::call`], as selectors
    /// are run); a failed instance is dropped.
    fn call<R>(
        &self,
        request_id: u64,
        f: impl FnOnce(&mut Store<StoreState>, &Bindings) -> wasmtime::Result<R>,
    ) -> Result<R, RulesFault> {
        let idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let (answer, live) = super::call::call(
            &self.plugin.name,
            &self.limits,
            request_id,
            idle,
            || self.instantiate().map(|(live, _, _)| live).map_err(|e| e.message),
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

    /// Fill `inputs` with the values of every declared slot (see `inputs` in `wit/rules.wit`).
    fn fill(&self, inputs: &mut wit::Inputs, request: &RequestInfo<'_>, response: Option<&HeaderMap>, env: &Env) {
        inputs.text.clear();
        inputs.lengths.clear();
        let f = self.needs.fields;
        if f.method {
            push(inputs, Some(request.method.as_str()));
        }
        if f.path {
            push(inputs, Some(request.uri.path()));
        }
        if f.query {
            push(inputs, Some(request.uri.query().unwrap_or("")));
        }
        if f.client_addr {
            push(inputs, Some(request.client.as_str()));
        }
        if f.host {
            push(inputs, Some(request.host));
        }
        for name in &self.needs.request_headers {
            push_header(inputs, request.headers, name);
        }
        for name in &self.needs.response_headers {
            match response {
                Some(headers) => push_header(inputs, headers, name),
                None => inputs.lengths.push(-1),
            }
        }
        for var in &self.slots.env {
            push(inputs, env.get_ignore_case(var));
        }
    }

    /// A 0.2.0 outcome with its indices resolved (and checked) into names.
    fn resolve(&self, outcome: wit::Outcome) -> RulesOutcome {
        let mut out = RulesOutcome {
            env: Vec::with_capacity(outcome.env.len()),
            headers: Vec::with_capacity(outcome.headers.len()),
            refused: Vec::new(),
        };
        for action in outcome.env {
            match self.slots.env.get(action.var as usize) {
                Some(name) => out.env.push((Arc::clone(name), action.value)),
                None => out.refused.push(format!(
                    "env action on variable {}, but the plugin declared {} (needs.env)",
                    action.var,
                    self.slots.env.len()
                )),
            }
        }
        for action in outcome.headers {
            match self.slots.targets.get(action.target as usize) {
                Some(Ok(name)) => {
                    out.headers.push(HeaderAction { op: op(action.op), name: name.clone(), value: action.value })
                }
                Some(Err(raw)) => out.refused.push(format!("`{raw}` is not a header name")),
                None => out.refused.push(format!(
                    "header action on target {}, but the plugin declared {} (needs.targets)",
                    action.target,
                    self.slots.targets.len()
                )),
            }
        }
        out
    }

    /// A 0.2.0 call with the inputs block built into this thread's buffer.
    fn call_v2(
        &self,
        request: &RequestInfo<'_>,
        response: Option<&HeaderMap>,
        env: &Env,
        f: impl FnOnce(&mut Store<StoreState>, &RulesFuncs, &wit::Inputs) -> wasmtime::Result<wit::Outcome>,
    ) -> Result<RulesOutcome, RulesFault> {
        let outcome = INPUTS.with(|cell| {
            let mut inputs = cell.borrow_mut();
            self.fill(&mut inputs, request, response, env);
            let answer = self.call(request.id, |store, b| match b {
                Bindings::V2(b) => f(store, b, &inputs),
                Bindings::V1(_) => Err(wasmtime::format_err!("internal error: a 0.1.0 instance for a 0.2.0 plugin")),
            });
            if inputs.text.capacity() > MAX_KEPT_INPUTS {
                *inputs = wit::Inputs { text: String::new(), lengths: Vec::new() };
            }
            answer
        })?;
        Ok(self.resolve(outcome))
    }

    /// A 0.1.0 call: the request view and the env list as that version built them.
    fn call_v1(
        &self,
        request: &RequestInfo<'_>,
        env: &Env,
        clock: Clock,
        f: impl FnOnce(
            &mut Store<StoreState>,
            &v0_1::RulesPlugin,
            &types::RequestView,
            &[(String, String)],
        ) -> wasmtime::Result<wit1::Outcome>,
    ) -> Result<RulesOutcome, RulesFault> {
        let view = request_view(self.needs.fields, &self.needs.request_headers, request);
        let mut vars: Vec<(String, String)> = env.vars().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        vars.push((V1_REQUEST_START_VAR.to_string(), clock.request_start_us.to_string()));
        vars.push((V1_NOW_VAR.to_string(), clock.now_us.to_string()));
        let outcome = self.call(request.id, |store, b| match b {
            Bindings::V1(b) => f(store, b, &view, &vars),
            Bindings::V2(_) => Err(wasmtime::format_err!("internal error: a 0.2.0 instance for a 0.1.0 plugin")),
        })?;
        Ok(convert_outcome_v1(outcome))
    }
}

impl RequestRules for WasmRules {
    fn name(&self) -> &str {
        &self.plugin.name
    }

    fn needs(&self) -> &RulesNeeds {
        &self.needs
    }

    fn on_request(&self, request: &RequestInfo<'_>, env: &Env, clock: Clock) -> Result<RulesOutcome, RulesFault> {
        match self.plugin.rules {
            Some(RulesPre::V1(_)) => self.call_v1(request, env, clock, |store, b, view, vars| {
                b.fulcrum_plugin_rules().call_on_request(store, view, vars)
            }),
            _ => {
                self.call_v2(request, None, env, |store, b, inputs| b.call_on_request(store, inputs, wit_clock(clock)))
            }
        }
    }

    fn on_response(
        &self,
        request: &RequestInfo<'_>,
        response: &ResponseInfo<'_>,
        env: &Env,
        clock: Clock,
    ) -> Result<RulesOutcome, RulesFault> {
        match self.plugin.rules {
            Some(RulesPre::V1(_)) => {
                let mut headers = Vec::new();
                for name in &self.needs.response_headers {
                    for value in response.headers.get_all(name) {
                        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                        headers.push((name.as_str().to_string(), value));
                    }
                }
                let view = wit1::ResponseView {
                    status: response.status,
                    origin: match response.origin {
                        Origin::Proxied => wit1::ResponseOrigin::Proxied,
                        Origin::Generated => wit1::ResponseOrigin::Generated,
                    },
                    headers,
                };
                self.call_v1(request, env, clock, |store, b, request, vars| {
                    b.fulcrum_plugin_rules().call_on_response(store, request, &view, vars)
                })
            }
            _ => {
                let origin = match response.origin {
                    Origin::Proxied => wit::ResponseOrigin::Proxied,
                    Origin::Generated => wit::ResponseOrigin::Generated,
                };
                self.call_v2(request, Some(response.headers), env, |store, b, inputs| {
                    b.call_on_response(store, response.status, origin, inputs, wit_clock(clock))
                })
            }
        }
    }
}

/// What `configure` declared, by version.
enum Declared {
    V2(wit::Needs),
    V1(wit1::Needs),
}

fn wit_clock(clock: Clock) -> wit::Clock {
    wit::Clock { request_start_us: clock.request_start_us, now_us: clock.now_us }
}

/// A slot's length as the WIT carries it.
fn length(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// One slot: its value, or -1 when it has none.
fn push(inputs: &mut wit::Inputs, value: Option<&str>) {
    match value {
        Some(value) => {
            inputs.text.push_str(value);
            inputs.lengths.push(length(value.len()));
        }
        None => inputs.lengths.push(-1),
    }
}

/// One header slot: its lines joined by `\n`, or -1 when the message does not carry it.
fn push_header(inputs: &mut wit::Inputs, headers: &HeaderMap, name: &HeaderName) {
    let start = inputs.text.len();
    let mut any = false;
    for value in headers.get_all(name) {
        if any {
            inputs.text.push('\n');
        }
        any = true;
        match value.to_str() {
            Ok(text) => inputs.text.push_str(text),
            Err(_) => inputs.text.push_str(&String::from_utf8_lossy(value.as_bytes())),
        }
    }
    inputs.lengths.push(if any { length(inputs.text.len() - start) } else { -1 });
}

fn op(op: wit::HeaderOp) -> HeaderOp {
    match op {
        wit::HeaderOp::Set => HeaderOp::Set,
        wit::HeaderOp::Append => HeaderOp::Append,
        wit::HeaderOp::Add => HeaderOp::Add,
        wit::HeaderOp::Unset => HeaderOp::Unset,
        wit::HeaderOp::Merge => HeaderOp::Merge,
        wit::HeaderOp::SetIfEmpty => HeaderOp::SetIfEmpty,
    }
}

fn convert_outcome_v1(outcome: wit1::Outcome) -> RulesOutcome {
    let mut out = RulesOutcome {
        env: outcome.env.into_iter().map(|a| (Arc::from(a.name), a.value)).collect(),
        headers: Vec::with_capacity(outcome.headers.len()),
        refused: Vec::new(),
    };
    for h in outcome.headers {
        let Ok(name) = HeaderName::from_bytes(h.name.as_bytes()) else {
            out.refused.push(format!("`{}` is not a header name", h.name));
            continue;
        };
        let op = match h.op {
            wit1::HeaderOp::Set => HeaderOp::Set,
            wit1::HeaderOp::Append => HeaderOp::Append,
            wit1::HeaderOp::Add => HeaderOp::Add,
            wit1::HeaderOp::Unset => HeaderOp::Unset,
            wit1::HeaderOp::Merge => HeaderOp::Merge,
            wit1::HeaderOp::SetIfEmpty => HeaderOp::SetIfEmpty,
        };
        out.headers.push(HeaderAction { op, name, value: h.value });
    }
    out
}

fn convert_needs(needs: wit::Needs) -> Result<(RulesNeeds, Slots), String> {
    let env: Vec<Arc<str>> = needs.env.into_iter().map(Arc::from).collect();
    let targets = needs.targets.into_iter().map(|t| HeaderName::from_bytes(t.as_bytes()).map_err(|_| t)).collect();
    let needs = RulesNeeds {
        fields: super::convert_fields(needs.fields),
        // Not deduplicated: each name is a slot, in the plugin's order.
        request_headers: header_slots(&needs.request_headers)?,
        response_headers: header_slots(&needs.response_headers)?,
        env: Some(env.clone()),
    };
    Ok((needs, Slots { env, targets }))
}

fn convert_needs_v1(needs: wit1::Needs) -> Result<RulesNeeds, String> {
    Ok(RulesNeeds {
        fields: super::convert_fields(needs.fields),
        request_headers: super::header_names(&needs.request_headers)?,
        response_headers: super::header_names(&needs.response_headers)?,
        env: None,
    })
}

/// Declared header slots, each name parsed (any case); an invalid name is an error naming it.
fn header_slots(names: &[String]) -> Result<Vec<HeaderName>, String> {
    names
        .iter()
        .map(|h| HeaderName::from_bytes(h.as_bytes()).map_err(|_| format!("`{h}`, which is not a header name")))
        .collect()
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
