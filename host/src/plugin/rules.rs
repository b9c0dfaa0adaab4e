//! [`WasmRules`]: a rules-world component behind the core's [`RequestRules`] trait.
//!
//! Rules keep no per-request state, so one rule set serves concurrent requests from a small pool
//! of warm instances (each configured once); a trapped instance is dropped, not returned.
//!
//! Three interface shapes are spoken. `fulcrum:plugin@0.5.0` (`wit/rules.wit`): the names are
//! declared once, at configure (header names parsed here, then), and per call only the values
//! cross, lengths and values in one block built into a reused buffer; the answer is its actions
//! as numbers (what, index, length) and their values end to end in one string, checked here
//! ([`WasmRules::resolve`]). `@0.4.0`, `@0.3.0` and `@0.2.0` (`host/wit-0.4.0/rules.wit`), whose
//! `rules` interfaces are the same: the same declarations and values, the values passed as a
//! string plus a list of lengths, actions as records. `fulcrum:plugin@0.1.0`
//! (`host/wit-0.1.0/rules.wit`), for plugins built before that: the request view and the whole env as
//! strings, the clock as two env entries, actions by name, as that version did.

use std::cell::RefCell;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use wasmtime::Store;
use wasmtime::component::{ComponentExportIndex, Func, InstancePre, TypedFunc};

use super::bindings::rules_world::exports::fulcrum::plugin::rules as wit;
use super::bindings::types;
use super::bindings::v0_1;
use super::bindings::v0_1::exports::fulcrum::plugin::rules as wit1;
use super::bindings::v0_4::exports::fulcrum::plugin::rules as wit4;
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

/// A call's inputs, built into buffers reused by the calls on this thread: filling them allocates
/// nothing once warm.
struct InputsBuf {
    /// The 0.5.0 block: one little-endian `s32` length per slot, then the values.
    block: Vec<u8>,
    /// The number of slots in `block`.
    slots: usize,
    /// The same values as 0.2.0 to 0.4.0 pass them, made from `block` for plugins of those versions.
    text: wit4::Inputs,
}

thread_local! {
    static INPUTS: RefCell<InputsBuf> = const {
        RefCell::new(InputsBuf { block: Vec::new(), slots: 0, text: wit4::Inputs { text: String::new(), lengths: Vec::new() } })
    };
}

/// An instance's typed exports, by version.
pub enum Bindings {
    V2(RulesFuncs),
    V1(v0_1::RulesPlugin),
}

/// How a slots-based rules plugin (0.2.0 and later) takes its inputs and gives its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    /// `fulcrum:plugin@0.2.0` to `@0.4.0`: a string and a list of lengths in, records out.
    Text,
    /// `fulcrum:plugin@0.5.0`: one block in, numbers and one string out.
    Block,
}

type ConfigureSig = (Result<wit::Needs, types::PluginError>,);
type ConfigureSig4 = (Result<wit4::Needs, types::PluginError>,);
type OnRequestSig = (wit::Outcome,);
type OnRequestSig4 = (wit4::Outcome,);

/// A slots-based rules component (`fulcrum:plugin@0.2.0` and later) ready to instantiate: its
/// `rules` export found at the version the component was built for.
#[derive(Clone)]
pub struct RulesPreV2 {
    pre: InstancePre<StoreState>,
    wire: Wire,
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
        let wire = match version {
            "0.2.0" | "0.3.0" | "0.4.0" => Wire::Text,
            _ => Wire::Block,
        };
        Ok(RulesPreV2 { pre, wire, configure, on_request, on_response })
    }

    /// A new instance, its functions type-checked.
    fn instantiate(&self, store: &mut Store<StoreState>) -> wasmtime::Result<RulesFuncs> {
        let instance = self.pre.instantiate(&mut *store)?;
        let funcs = match self.wire {
            Wire::Block => {
                let configure =
                    instance.get_typed_func::<(&types::PluginConfig,), ConfigureSig>(&mut *store, self.configure)?;
                let on_request =
                    instance.get_typed_func::<(&[u8], wit::Clock), OnRequestSig>(&mut *store, self.on_request)?;
                let on_response = instance
                    .get_typed_func::<(u16, wit::ResponseOrigin, &[u8], wit::Clock), OnRequestSig>(
                        &mut *store,
                        self.on_response,
                    )?;
                [*configure.func(), *on_request.func(), *on_response.func()]
            }
            Wire::Text => {
                let configure =
                    instance.get_typed_func::<(&types::PluginConfig,), ConfigureSig4>(&mut *store, self.configure)?;
                let on_request = instance
                    .get_typed_func::<(&wit4::Inputs, wit4::Clock), OnRequestSig4>(&mut *store, self.on_request)?;
                let on_response = instance
                    .get_typed_func::<(u16, wit4::ResponseOrigin, &wit4::Inputs, wit4::Clock), OnRequestSig4>(
                        &mut *store,
                        self.on_response,
                    )?;
                [*configure.func(), *on_request.func(), *on_response.func()]
            }
        };
        let [configure, on_request, on_response] = funcs;
        Ok(RulesFuncs { wire: self.wire, configure, on_request, on_response })
    }
}

/// An instance's typed `rules` functions (0.2.0 and later), called in the shapes of its [`Wire`].
pub struct RulesFuncs {
    wire: Wire,
    configure: Func,
    on_request: Func,
    on_response: Func,
}

/// A rules call's answer, in the shapes of the plugin's version.
enum Answer {
    Block(wit::Outcome),
    Text(wit4::Outcome),
}

/// Where a call is made from: the request phase, or the response's status and origin.
#[derive(Debug, Clone, Copy)]
enum Phase {
    Request,
    Response(u16, Origin),
}

impl RulesFuncs {
    fn call_configure(
        &self,
        store: &mut Store<StoreState>,
        config: &types::PluginConfig,
    ) -> wasmtime::Result<Result<wit::Needs, types::PluginError>> {
        // SAFETY (all calls below): the signatures were checked when the instance was made
        // ([`RulesPreV2::instantiate`]), for this `wire`.
        match self.wire {
            Wire::Block => {
                let f = unsafe { TypedFunc::<(&types::PluginConfig,), ConfigureSig>::new_unchecked(self.configure) };
                Ok(f.call(store, (config,))?.0)
            }
            Wire::Text => {
                let f = unsafe { TypedFunc::<(&types::PluginConfig,), ConfigureSig4>::new_unchecked(self.configure) };
                Ok(f.call(store, (config,))?.0.map(|n| wit::Needs {
                    fields: n.fields,
                    request_headers: n.request_headers,
                    response_headers: n.response_headers,
                    env: n.env,
                    targets: n.targets,
                }))
            }
        }
    }

    /// `on-request` or `on-response` with the inputs in `inputs.block` (and, for a 0.2.0 to 0.4.0
    /// plugin, made into `inputs.text` here).
    fn call_phase(
        &self,
        store: &mut Store<StoreState>,
        phase: Phase,
        inputs: &mut InputsBuf,
        clock: Clock,
    ) -> wasmtime::Result<Answer> {
        match (self.wire, phase) {
            (Wire::Block, Phase::Request) => {
                let f = unsafe { TypedFunc::<(&[u8], wit::Clock), OnRequestSig>::new_unchecked(self.on_request) };
                let clock = wit::Clock { request_start_us: clock.request_start_us, now_us: clock.now_us };
                Ok(Answer::Block(f.call(store, (&inputs.block, clock))?.0))
            }
            (Wire::Block, Phase::Response(status, origin)) => {
                let f = unsafe {
                    TypedFunc::<(u16, wit::ResponseOrigin, &[u8], wit::Clock), OnRequestSig>::new_unchecked(
                        self.on_response,
                    )
                };
                let origin = match origin {
                    Origin::Proxied => wit::ResponseOrigin::Proxied,
                    Origin::Generated => wit::ResponseOrigin::Generated,
                };
                let clock = wit::Clock { request_start_us: clock.request_start_us, now_us: clock.now_us };
                Ok(Answer::Block(f.call(store, (status, origin, &inputs.block, clock))?.0))
            }
            (Wire::Text, phase) => {
                inputs.block_to_text();
                let clock = wit4::Clock { request_start_us: clock.request_start_us, now_us: clock.now_us };
                let outcome = match phase {
                    Phase::Request => {
                        let f = unsafe {
                            TypedFunc::<(&wit4::Inputs, wit4::Clock), OnRequestSig4>::new_unchecked(self.on_request)
                        };
                        f.call(store, (&inputs.text, clock))?.0
                    }
                    Phase::Response(status, origin) => {
                        let f = unsafe {
                            TypedFunc::<(u16, wit4::ResponseOrigin, &wit4::Inputs, wit4::Clock), OnRequestSig4>::new_unchecked(
                                self.on_response,
                            )
                        };
                        let origin = match origin {
                            Origin::Proxied => wit4::ResponseOrigin::Proxied,
                            Origin::Generated => wit4::ResponseOrigin::Generated,
                        };
                        f.call(store, (status, origin, &inputs.text, clock))?.0
                    }
                };
                Ok(Answer::Text(outcome))
            }
        }
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

    /// Fill `block` with the values of every declared slot (see `inputs` in `wit/rules.wit`):
    /// room for one length per slot first, then each value, its length written into its place.
    fn fill(&self, inputs: &mut InputsBuf, request: &RequestInfo<'_>, response: Option<&HeaderMap>, env: &Env) {
        let f = self.needs.fields;
        let fields = [f.method, f.path, f.query, f.client_addr, f.host].iter().filter(|on| **on).count();
        let slots =
            fields + self.needs.request_headers.len() + self.needs.response_headers.len() + self.slots.env.len();
        inputs.slots = slots;
        inputs.block.clear();
        inputs.block.resize(4 * slots, 0);
        let mut out = Block { block: &mut inputs.block, slot: 0 };
        if f.method {
            out.value(Some(request.method.as_str()));
        }
        if f.path {
            out.value(Some(request.uri.path()));
        }
        if f.query {
            out.value(Some(request.uri.query().unwrap_or("")));
        }
        if f.client_addr {
            out.value(Some(request.client.as_str()));
        }
        if f.host {
            out.value(Some(request.host));
        }
        for name in &self.needs.request_headers {
            out.header(request.headers, name);
        }
        for name in &self.needs.response_headers {
            match response {
                Some(headers) => out.header(headers, name),
                None => out.value(None),
            }
        }
        for var in &self.slots.env {
            out.value(env.get_ignore_case(var));
        }
    }

    /// An answer with its indices resolved (and checked) into names; what does not hold is
    /// refused, in words, and the rest applies.
    fn resolve(&self, answer: Answer, out: &mut RulesOutcome) {
        match answer {
            Answer::Block(outcome) => resolve_block(&self.slots, outcome, out),
            Answer::Text(outcome) => self.resolve_text(outcome, out),
        }
    }

    /// A 0.2.0 to 0.4.0 outcome: actions as records.
    fn resolve_text(&self, outcome: wit4::Outcome, out: &mut RulesOutcome) {
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
                Some(Ok(name)) => match header_value(Bytes::from(action.value), name) {
                    Ok(value) => out.headers.push(HeaderAction { op: op(action.op), name: name.clone(), value }),
                    Err(why) => out.refused.push(why),
                },
                Some(Err(raw)) => out.refused.push(format!("`{raw}` is not a header name")),
                None => out.refused.push(format!(
                    "header action on target {}, but the plugin declared {} (needs.targets)",
                    action.target,
                    self.slots.targets.len()
                )),
            }
        }
    }

    /// A call of a 0.2.0-or-later plugin with the inputs built into this thread's buffers.
    fn call_slots(
        &self,
        request: &RequestInfo<'_>,
        response: Option<&HeaderMap>,
        env: &Env,
        phase: Phase,
        clock: Clock,
        out: &mut RulesOutcome,
    ) -> Result<(), RulesFault> {
        let answer = INPUTS.with(|cell| {
            let mut inputs = cell.borrow_mut();
            self.fill(&mut inputs, request, response, env);
            let answer = self.call(request.id, |store, b| match b {
                Bindings::V2(b) => b.call_phase(store, phase, &mut inputs, clock),
                Bindings::V1(_) => Err(wasmtime::format_err!("internal error: a 0.1.0 instance for a 0.2.0 plugin")),
            });
            if inputs.block.capacity() > MAX_KEPT_INPUTS || inputs.text.text.capacity() > MAX_KEPT_INPUTS {
                *inputs = InputsBuf {
                    block: Vec::new(),
                    slots: 0,
                    text: wit4::Inputs { text: String::new(), lengths: Vec::new() },
                };
            }
            answer
        })?;
        self.resolve(answer, out);
        Ok(())
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
        out: &mut RulesOutcome,
    ) -> Result<(), RulesFault> {
        let view = request_view(self.needs.fields, &self.needs.request_headers, request);
        let mut vars: Vec<(String, String)> = env.vars().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        vars.push((V1_REQUEST_START_VAR.to_string(), clock.request_start_us.to_string()));
        vars.push((V1_NOW_VAR.to_string(), clock.now_us.to_string()));
        let outcome = self.call(request.id, |store, b| match b {
            Bindings::V1(b) => f(store, b, &view, &vars),
            Bindings::V2(_) => Err(wasmtime::format_err!("internal error: a 0.2.0 instance for a 0.1.0 plugin")),
        })?;
        convert_outcome_v1(outcome, out);
        Ok(())
    }
}

impl RequestRules for WasmRules {
    fn name(&self) -> &str {
        &self.plugin.name
    }

    fn needs(&self) -> &RulesNeeds {
        &self.needs
    }

    fn on_request_into(
        &self,
        request: &RequestInfo<'_>,
        env: &Env,
        clock: Clock,
        out: &mut RulesOutcome,
    ) -> Result<(), RulesFault> {
        match self.plugin.rules {
            Some(RulesPre::V1(_)) => self.call_v1(
                request,
                env,
                clock,
                |store, b, view, vars| b.fulcrum_plugin_rules().call_on_request(store, view, vars),
                out,
            ),
            _ => self.call_slots(request, None, env, Phase::Request, clock, out),
        }
    }

    fn on_response_into(
        &self,
        request: &RequestInfo<'_>,
        response: &ResponseInfo<'_>,
        env: &Env,
        clock: Clock,
        out: &mut RulesOutcome,
    ) -> Result<(), RulesFault> {
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
                self.call_v1(
                    request,
                    env,
                    clock,
                    |store, b, request, vars| b.fulcrum_plugin_rules().call_on_response(store, request, &view, vars),
                    out,
                )
            }
            _ => {
                let phase = Phase::Response(response.status, response.origin);
                self.call_slots(request, Some(response.headers), env, phase, clock, out)
            }
        }
    }
}

/// What `configure` declared, by version.
enum Declared {
    V2(wit::Needs),
    V1(wit1::Needs),
}

/// A slot's length as the WIT carries it.
fn length(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// A 0.5.0 outcome: (what, index, length) per action, the values end to end in one string.
fn resolve_block(slots: &Slots, outcome: wit::Outcome, out: &mut RulesOutcome) {
    let actions = &outcome.actions;
    // The header values share the string's bytes (no copy per value), and are checked in one
    // pass: when every byte may stand in a header value (the string holds nothing else but the
    // variables' values), each is taken as it is; otherwise each is checked on its own.
    let mut values = Bytes::from(outcome.values);
    let all_valid = crate::rules::header_value_bytes_ok(&values);
    if !actions.len().is_multiple_of(3) {
        out.refused.push(format!(
            "the actions list has {} numbers, not three per action: the last {} are ignored",
            actions.len(),
            actions.len() % 3
        ));
    }
    // One action takes the string whole: no shared copy of it is made.
    let only = actions.len() / 3 == 1;
    let mut at = 0usize;
    for (n, action) in actions.chunks_exact(3).enumerate() {
        let (what, index, length) = (action[0], action[1] as usize, action[2] as usize);
        let Some(end) = at.checked_add(length).filter(|end| *end <= values.len()) else {
            out.refused.push(format!(
                "action {n} has a value of {length} bytes from byte {at}, past the end of the {} bytes of \
                 values: it and the {} actions after it are refused",
                values.len(),
                actions.len() / 3 - n - 1
            ));
            break;
        };
        let value =
            if only && at == 0 && end == values.len() { std::mem::take(&mut values) } else { values.slice(at..end) };
        at = end;
        if let Some(op) = HEADER_OPS.get(what as usize) {
            match slots.targets.get(index) {
                Some(Ok(name)) => {
                    let value = if all_valid {
                        // SAFETY: every byte of the values was checked above (`header_value_bytes_ok`
                        // accepts exactly the bytes `HeaderValue` does; its test says so).
                        Ok(unsafe { HeaderValue::from_maybe_shared_unchecked(value) })
                    } else {
                        header_value(value, name)
                    };
                    match value {
                        Ok(value) => out.headers.push(HeaderAction { op: *op, name: name.clone(), value }),
                        Err(why) => out.refused.push(why),
                    }
                }
                Some(Err(raw)) => out.refused.push(format!("`{raw}` is not a header name")),
                None => out.refused.push(format!(
                    "header action on target {index}, but the plugin declared {} (needs.targets)",
                    slots.targets.len()
                )),
            }
            continue;
        }
        let Some(name) = slots.env.get(index).filter(|_| what == SET_ENV || what == UNSET_ENV) else {
            out.refused.push(match what {
                SET_ENV | UNSET_ENV => {
                    format!("env action on variable {index}, but the plugin declared {} (needs.env)", slots.env.len())
                }
                _ => format!("action {n} is of kind {what}: 0 to 5 change a header, 6 and 7 a variable"),
            });
            continue;
        };
        if what == UNSET_ENV {
            out.env.push((Arc::clone(name), None));
            continue;
        }
        match std::str::from_utf8(&value) {
            Ok(text) => out.env.push((Arc::clone(name), Some(text.to_string()))),
            Err(_) => out.refused.push(format!("the value for variable `{name}` splits a UTF-8 character")),
        }
    }
}

/// A plugin's value for header `name`, checked (sharing its bytes), or why it is refused.
fn header_value(value: Bytes, name: &HeaderName) -> Result<HeaderValue, String> {
    HeaderValue::from_maybe_shared(value).map_err(|_| format!("the value for `{name}` is not a valid header value"))
}

/// The header ops of a 0.5.0 action, by its `what` (0 to 5); 6 and 7 are env actions.
const HEADER_OPS: [HeaderOp; 6] =
    [HeaderOp::Set, HeaderOp::Append, HeaderOp::Add, HeaderOp::Unset, HeaderOp::Merge, HeaderOp::SetIfEmpty];
const SET_ENV: u32 = 6;
const UNSET_ENV: u32 = 7;

/// A 0.5.0 inputs block being filled: each value appended, its length written into its slot.
struct Block<'a> {
    block: &'a mut Vec<u8>,
    slot: usize,
}

impl Block<'_> {
    fn set_length(&mut self, length: i32) {
        if let Some(place) = self.block.get_mut(4 * self.slot..4 * self.slot + 4) {
            place.copy_from_slice(&length.to_le_bytes());
        }
        self.slot += 1;
    }

    /// One slot: its value, or -1 when it has none.
    fn value(&mut self, value: Option<&str>) {
        match value {
            Some(value) => {
                self.block.extend_from_slice(value.as_bytes());
                self.set_length(length(value.len()));
            }
            None => self.set_length(-1),
        }
    }

    /// One header slot: its lines joined by `\n`, or -1 when the message does not carry it. Bytes
    /// that are not UTF-8 become U+FFFD.
    fn header(&mut self, headers: &HeaderMap, name: &HeaderName) {
        let start = self.block.len();
        let mut any = false;
        for value in headers.get_all(name) {
            if any {
                self.block.push(b'\n');
            }
            any = true;
            match value.to_str() {
                Ok(text) => self.block.extend_from_slice(text.as_bytes()),
                Err(_) => self.block.extend_from_slice(String::from_utf8_lossy(value.as_bytes()).as_bytes()),
            }
        }
        let written = self.block.len() - start;
        self.set_length(if any { length(written) } else { -1 });
    }
}

impl InputsBuf {
    /// The 0.2.0 to 0.4.0 inputs (a string and a list of lengths) from the block.
    fn block_to_text(&mut self) {
        let (lengths, values) = self.block.split_at(4 * self.slots);
        self.text.lengths.clear();
        self.text.lengths.extend(lengths.chunks_exact(4).map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]])));
        self.text.text.clear();
        // The block is made of `&str`s only, so this never fails.
        self.text.text.push_str(std::str::from_utf8(values).unwrap_or_default());
    }
}

fn op(op: wit4::HeaderOp) -> HeaderOp {
    match op {
        wit4::HeaderOp::Set => HeaderOp::Set,
        wit4::HeaderOp::Append => HeaderOp::Append,
        wit4::HeaderOp::Add => HeaderOp::Add,
        wit4::HeaderOp::Unset => HeaderOp::Unset,
        wit4::HeaderOp::Merge => HeaderOp::Merge,
        wit4::HeaderOp::SetIfEmpty => HeaderOp::SetIfEmpty,
    }
}

fn convert_outcome_v1(outcome: wit1::Outcome, out: &mut RulesOutcome) {
    out.env.extend(outcome.env.into_iter().map(|a| (Arc::from(a.name), a.value)));
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
        match header_value(Bytes::from(h.value), &name) {
            Ok(value) => out.headers.push(HeaderAction { op, name, value }),
            Err(why) => out.refused.push(why),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The slots of the tests: variables `A` and `B`, targets `x-a` and one that is no header name.
    fn slots() -> Slots {
        Slots {
            env: vec![Arc::from("A"), Arc::from("B")],
            targets: vec![Ok(HeaderName::from_static("x-a")), Err("bad name".to_string())],
        }
    }

    /// Plugin answers (numbers, values), what the host applies, what it refuses: every malformed
    /// action is refused in words, never a panic, and the well-formed ones still apply.
    #[test]
    fn block_outcomes_resolve_and_bad_actions_are_refused() {
        type Env = &'static [(&'static str, Option<&'static str>)];
        type Headers = &'static [(HeaderOp, &'static str)];
        /// Numbers, values; then env actions, header actions, and words each refusal contains.
        type Case = (&'static [u32], &'static str, Env, Headers, &'static [&'static str]);
        let cases: &[Case] = &[
            (&[0, 0, 2, 2, 0, 2], "v1v2", &[], &[(HeaderOp::Set, "v1"), (HeaderOp::Add, "v2")], &[]),
            (&[6, 1, 2, 7, 0, 0], "on", &[("B", Some("on")), ("A", None)], &[], &[]),
            // Env actions listed after header ones still take their values in list order.
            (&[4, 0, 1, 6, 0, 2], "xyz", &[("A", Some("yz"))], &[(HeaderOp::Merge, "x")], &[]),
            (&[0, 5, 1, 3, 0, 0], "v", &[], &[(HeaderOp::Unset, "")], &["header action on target 5"]),
            (&[0, 1, 1], "v", &[], &[], &["`bad name` is not a header name"]),
            (&[6, 2, 1], "v", &[], &[], &["env action on variable 2, but the plugin declared 2"]),
            (&[9, 0, 0, 5, 0, 1], "v", &[], &[(HeaderOp::SetIfEmpty, "v")], &["action 0 is of kind 9"]),
            (&[0, 0, 1, 0, 0, 9, 0, 0, 1], "ab", &[], &[(HeaderOp::Set, "a")], &["action 1 has a value of 9 bytes"]),
            (&[0, 0, 1, 0], "a", &[], &[(HeaderOp::Set, "a")], &["has 4 numbers, not three per action"]),
            (&[0, 0, u32::MAX], "a", &[], &[], &["past the end"]),
            // "é" is two bytes: a variable's value cannot end inside it.
            (&[6, 0, 1], "é", &[], &[], &["splits a UTF-8 character"]),
            // A header value may not hold a line break; a variable's may, and then the header
            // values around it are each checked on their own.
            (&[0, 0, 3], "a\nb", &[], &[], &["the value for `x-a` is not a valid header value"]),
            (
                &[2, 0, 1, 6, 0, 3, 2, 0, 1],
                "xa\nby",
                &[("A", Some("a\nb"))],
                &[(HeaderOp::Add, "x"), (HeaderOp::Add, "y")],
                &[],
            ),
            (
                &[0, 0, 1, 2, 0, 2],
                "x\x7fz",
                &[],
                &[(HeaderOp::Set, "x")],
                &["the value for `x-a` is not a valid header value"],
            ),
        ];
        for (actions, values, env, headers, refused) in cases {
            let outcome = wit::Outcome { actions: actions.to_vec(), values: values.to_string() };
            let mut out = RulesOutcome::default();
            resolve_block(&slots(), outcome, &mut out);
            let got_env: Vec<(&str, Option<&str>)> = out.env.iter().map(|(n, v)| (&**n, v.as_deref())).collect();
            assert_eq!(got_env, *env, "{actions:?} {values:?}");
            let got_headers: Vec<(HeaderOp, &[u8])> = out.headers.iter().map(|h| (h.op, h.value.as_bytes())).collect();
            let want_headers: Vec<(HeaderOp, &[u8])> = headers.iter().map(|(op, v)| (*op, v.as_bytes())).collect();
            assert_eq!(got_headers, want_headers, "{actions:?} {values:?}");
            assert!(out.headers.iter().all(|h| h.name == "x-a"), "{actions:?}");
            assert_eq!(out.refused.len(), refused.len(), "{actions:?}: {:?}", out.refused);
            for (why, want) in out.refused.iter().zip(*refused) {
                assert!(why.contains(want), "{actions:?}: {why:?} should say {want:?}");
            }
        }
    }
}
