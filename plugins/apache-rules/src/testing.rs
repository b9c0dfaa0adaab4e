//! The plugin driven natively, the way the host drives the component, with owned requests and
//! actions by name: for the plugin's own tests, the property tests and the fuzz target.
//!
//! [`ApacheRules::configure`], [`ApacheRules::on_request`] and [`ApacheRules::on_response`] here
//! build the inputs block from a [`RequestView`] and an env list exactly as the host does (only
//! the declared slots; header lines joined by `\n`; variables looked up without regard to case;
//! the clock from the `FULCRUM_REQUEST_START_US`/`FULCRUM_NOW_US` entries when present), run the
//! real [`fulcrum_sdk::Rules`] implementation on a [`fulcrum_sdk::rules::Call`] over it, and
//! answer the actions with the names their indices stand for.

use fulcrum_sdk::Rules;
use fulcrum_sdk::rules::{Action, Call, Clock, Fields};
pub use fulcrum_sdk::rules::{HeaderOp, PluginConfig, PluginError, RequestFields, ResponseOrigin};

use crate::ApacheRules;
use crate::context::{NOW_US, REQUEST_START_US};

/// A request, as the 0.1.0 interface carried it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestView {
    pub method: String,
    pub path: String,
    pub query: String,
    pub client_addr: String,
    pub host: String,
    /// Header lines in order (names any case).
    pub headers: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseView {
    pub status: u16,
    pub origin: ResponseOrigin,
    pub headers: Vec<(String, String)>,
}

/// What configure declared, by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Needs {
    pub fields: RequestFields,
    pub request_headers: Vec<String>,
    pub response_headers: Vec<String>,
    pub env: Vec<String>,
    pub targets: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvAction {
    pub name: String,
    pub value: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderAction {
    pub op: HeaderOp,
    pub name: String,
    pub value: String,
}

/// A call's actions, with names.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outcome {
    pub env: Vec<EnvAction>,
    pub headers: Vec<HeaderAction>,
}

impl ApacheRules {
    /// Configure as the host does, answering the declaration by name.
    pub fn configure(config: &PluginConfig) -> Result<(ApacheRules, Needs), PluginError> {
        let mut needs = fulcrum_sdk::rules::Needs::default();
        let rules = <ApacheRules as Rules>::configure(config, &mut needs)?;
        let needs = Needs {
            fields: needs.fields(),
            request_headers: needs.request_headers().to_vec(),
            response_headers: needs.response_headers().to_vec(),
            env: needs.env_vars().to_vec(),
            targets: needs.targets().to_vec(),
        };
        Ok((rules, needs))
    }

    /// `on-request` for `request` with environment `env`.
    pub fn on_request(&mut self, request: &RequestView, env: &[(String, String)]) -> Outcome {
        self.run(request, None, env)
    }

    /// `on-response` for `request` and `response` with environment `env`.
    pub fn on_response(&mut self, request: &RequestView, response: &ResponseView, env: &[(String, String)]) -> Outcome {
        self.run(request, Some(response), env)
    }

    fn run(&mut self, request: &RequestView, response: Option<&ResponseView>, env: &[(String, String)]) -> Outcome {
        let prepared = self.prepare(request, response, env);
        let outcome = self.run_prepared(&prepared, &mut Vec::new());
        let needs = prepared.layout.needs();
        let name = |list: &[String], i: u32| list.get(i as usize).cloned().unwrap_or_else(|| format!("#{i}"));
        let mut named = Outcome::default();
        for action in outcome.actions() {
            match action {
                Action::Env { var, value } => {
                    named.env.push(EnvAction { name: name(needs.env_vars(), var.0), value: value.map(str::to_string) })
                }
                Action::Header { op, target, value } => named.headers.push(HeaderAction {
                    op,
                    name: name(needs.targets(), target.0),
                    value: value.to_string(),
                }),
            }
        }
        named
    }
}

/// One call's inputs block, built once as the host builds it, to be run many times (benchmarks:
/// what is measured is then only what the guest does per call).
#[derive(Debug, Clone)]
pub struct Prepared {
    layout: fulcrum_sdk::rules::Layout,
    inputs: fulcrum_sdk::rules::Inputs,
    clock: Clock,
    response: Option<(u16, ResponseOrigin)>,
}

impl ApacheRules {
    /// The inputs of `on-request` (`response: None`) or `on-response`, as [`ApacheRules::on_request`]
    /// and [`ApacheRules::on_response`] build them.
    pub fn prepare(
        &self,
        request: &RequestView,
        response: Option<&ResponseView>,
        env: &[(String, String)],
    ) -> Prepared {
        let fields = Fields {
            method: &request.method,
            path: &request.path,
            query: &request.query,
            client_addr: &request.client_addr,
            host: &request.host,
        };
        let inputs = self.layout.inputs(&fields, &request.headers, response.map(|r| r.headers.as_slice()), env);
        let micros =
            |name: &str| env.iter().find(|(n, _)| n == name).and_then(|(_, v)| v.trim().parse().ok()).unwrap_or(0);
        let clock = Clock { request_start_us: micros(REQUEST_START_US), now_us: micros(NOW_US) };
        Prepared { layout: self.layout.clone(), inputs, clock, response: response.map(|r| (r.status, r.origin)) }
    }

    /// Run a prepared call as the component's export does (the SDK's `export_rules!` glue: a
    /// [`Call`] over the inputs with a reused span buffer), answering the wire outcome.
    pub fn run_prepared(&mut self, prepared: &Prepared, spans: &mut Vec<(u32, i32)>) -> fulcrum_sdk::rules::Outcome {
        let call = Call::new(&prepared.layout, &prepared.inputs, prepared.clock, prepared.response, spans);
        match prepared.response {
            None => <ApacheRules as Rules>::on_request(self, &call),
            Some(_) => <ApacheRules as Rules>::on_response(self, &call),
        }
    }
}
