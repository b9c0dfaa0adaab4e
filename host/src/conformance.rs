//! The conformance kit for selector plugins: cases that any build of a default lbmethod must pass
//! to replace the built-in one (`fulcrum plugin conform FILE.wasm`). The cases are data
//! (`sdk/conformance/byrequests.toml`), written from Apache's recorded behaviour, and are run the
//! way the balancer runs a selector: through [`MemberSelector`], with the host keeping the
//! counters and passing only the state columns the plugin declared.

use serde::Deserialize;

use crate::Error;
use crate::balancer::{BalancerSpec, MemberSelector, RequestInfo, SelectState, SelectorFactory};
use crate::config::Config;

/// The kit every `byrequests` must pass.
pub const BYREQUESTS_KIT: &str = include_str!("../../sdk/conformance/byrequests.toml");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Kit {
    case: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    loadfactors: Vec<u32>,
    steps: Vec<Step>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Step {
    #[serde(default)]
    select: Vec<u32>,
    candidates: Option<Vec<u32>>,
    sticky: Option<u32>,
}

/// One case's result: `None` when it passed, else what went wrong first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub case: String,
    pub failure: Option<String>,
}

/// Run every case of `kit` against the plugin `lbmethod` built by `factory`.
pub fn run(kit: &str, factory: &dyn SelectorFactory, lbmethod: &str) -> Result<Vec<Outcome>, Error> {
    let kit: Kit = toml::from_str(kit).map_err(|e| Error::msg(format!("conformance kit: {e}")))?;
    let mut outcomes = Vec::new();
    for case in &kit.case {
        let failure = run_case(case, factory, lbmethod).err();
        outcomes.push(Outcome { case: case.name.clone(), failure });
    }
    Ok(outcomes)
}

fn run_case(case: &Case, factory: &dyn SelectorFactory, lbmethod: &str) -> Result<(), String> {
    let mut text = format!(
        "listen = [\"127.0.0.1:0\"]\n[[vhost]]\nserver_name = \"kit\"\n\
         proxy_pass = [{{ path = \"/\", to = \"balancer://kit/\" }}]\n[balancer.kit]\nlbmethod = {lbmethod:?}\n"
    );
    for (i, lf) in case.loadfactors.iter().enumerate() {
        text.push_str(&format!(
            "[[balancer.kit.member]]\nurl = \"http://10.0.0.{}:80\"\nroute = \"web{}\"\nloadfactor = {lf}\n",
            i + 1,
            i + 1
        ));
    }
    let config = Config::parse(&text, std::path::Path::new("conformance.toml")).map_err(|e| format!("{e}"))?;
    let balancer = &config.balancers[0];
    let mut selector =
        factory.selector(&BalancerSpec::lbmethod(balancer)).map_err(|e| format!("configure failed: {e:#}"))?;
    let n = case.loadfactors.len();
    let mut lbstatus = vec![0i64; n];
    let zeros = vec![0u64; n];
    // The kit's members report no load.
    let no_reports = vec![None; n];
    let (method, uri, headers) = (hyper::Method::GET, hyper::Uri::from_static("/"), hyper::HeaderMap::new());
    let request = RequestInfo {
        id: 0,
        method: &method,
        uri: &uri,
        headers: &headers,
        client: &[127, 0, 0, 1].into(),
        host: "kit",
    };
    let all: Vec<u32> = (0..n as u32).collect();
    let mut step_no = 0;
    for step in &case.steps {
        let candidates = step.candidates.as_deref().unwrap_or(&all);
        if let Some(member) = step.sticky {
            step_no += 1;
            let state = state(selector.as_ref(), candidates, &lbstatus, &zeros, &no_reports);
            let counters = selector.sticky(&request, member, &state).map_err(|e| format!("step {step_no}: {e}"))?;
            update(&mut lbstatus, counters)
                .map_err(|e| format!("step {step_no} (sticky to web{}): {e}", member + 1))?;
        }
        for &expected in &step.select {
            step_no += 1;
            let state = state(selector.as_ref(), candidates, &lbstatus, &zeros, &no_reports);
            let selection = selector.select(&request, &state).map_err(|e| format!("request {step_no}: {e}"))?;
            match selection.member {
                Some(m) if m == expected => {}
                Some(m) => {
                    return Err(format!("request {step_no}: chose web{}, Apache chooses web{}", m + 1, expected + 1));
                }
                None => return Err(format!("request {step_no}: declined, Apache chooses web{}", expected + 1)),
            }
            update(&mut lbstatus, selection.lbstatus).map_err(|e| format!("request {step_no}: {e}"))?;
        }
    }
    Ok(())
}

/// The state a balancer would pass: only the columns the selector declared.
fn state<'a>(
    selector: &dyn MemberSelector,
    candidates: &'a [u32],
    lbstatus: &'a [i64],
    zeros: &'a [u64],
    no_reports: &'a [Option<crate::balancer::LoadReport>],
) -> SelectState<'a> {
    let columns = selector.needs().columns;
    SelectState {
        candidates,
        lbstatus: if columns.lbstatus { lbstatus } else { &[] },
        busy: if columns.busy { zeros } else { &[] },
        traffic: if columns.traffic { zeros } else { &[] },
        load: if columns.load { no_reports } else { &[] },
    }
}

fn update(lbstatus: &mut [i64], counters: Vec<i64>) -> Result<(), String> {
    match counters.len() {
        0 => Ok(()),
        n if n == lbstatus.len() => {
            lbstatus.copy_from_slice(&counters);
            Ok(())
        }
        n => Err(format!("answered {n} lbstatus counters for {} members", lbstatus.len())),
    }
}
