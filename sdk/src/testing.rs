//! A native test harness for selector plugins: drive a [`Selector`](crate::Selector) the way Fulcrum
//! does, in plain `cargo test`, without building Wasm.
//!
//! The harness keeps the balancing state as the host does (lbstatus, busy, traffic, which members
//! are usable), offers the usable members as candidates, and checks every answer as the host
//! would: the member must be a candidate, new counters must cover every member. (It has no lbset
//! tiers or hot standbys: every usable member is a candidate.)
//!
//! ```ignore
//! let mut h = SelectorHarness::<ByRequests>::new(&[("http://a", "web1", 1), ("http://b", "web2", 2)], &[]).unwrap();
//! assert_eq!(h.routes(6), ["web2", "web1", "web2", "web2", "web1", "web2"]);
//! ```

use crate::Selector;
use crate::selector::*;

pub struct SelectorHarness<S: Selector> {
    selector: S,
    needs: Needs,
    members: Vec<Member>,
    lbstatus: Vec<i64>,
    busy: Vec<u64>,
    traffic: Vec<u64>,
    load: Vec<Option<LoadReport>>,
    usable: Vec<bool>,
}

impl<S: Selector> SelectorHarness<S> {
    /// Configure the selector for members `(url, route, loadfactor)` and options `(key, value)`.
    pub fn new(members: &[(&str, &str, u32)], options: &[(&str, &str)]) -> Result<Self, PluginError> {
        let members: Vec<Member> = members
            .iter()
            .map(|(url, route, lf)| Member {
                name: url.to_string(),
                route: route.to_string(),
                lbfactor: lf * 100,
                lbset: 0,
            })
            .collect();
        let config = PluginConfig {
            name: "under-test".into(),
            options: options.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            toml: String::new(),
        };
        let info = BalancerInfo { name: "test".into(), members: members.clone(), config };
        let (selector, needs) = S::configure(&info)?;
        let n = members.len();
        Ok(SelectorHarness {
            selector,
            needs,
            members,
            lbstatus: vec![0; n],
            busy: vec![0; n],
            traffic: vec![0; n],
            load: vec![None; n],
            usable: vec![true; n],
        })
    }

    /// What the selector declared it needs.
    pub fn needs(&self) -> &Needs {
        &self.needs
    }

    /// Mark a member usable or not (in error, disabled).
    pub fn set_usable(&mut self, member: usize, usable: bool) {
        self.usable[member] = usable;
    }

    pub fn set_busy(&mut self, member: usize, busy: u64) {
        self.busy[member] = busy;
    }

    /// What the member reports of its load (its health checks' `busy=N&ready=M`), or `None`
    /// for no fresh report.
    pub fn set_load(&mut self, member: usize, report: Option<(u32, u32)>) {
        self.load[member] = report.map(|(busy, ready)| LoadReport { busy, ready });
    }

    pub fn set_traffic(&mut self, member: usize, bytes: u64) {
        self.traffic[member] = bytes;
    }

    pub fn lbstatus(&self) -> &[i64] {
        &self.lbstatus
    }

    /// A request with nothing in it but these headers (names lower-cased).
    pub fn request(headers: &[(&str, &str)]) -> RequestView {
        RequestView {
            method: "GET".into(),
            path: "/".into(),
            query: String::new(),
            client_addr: "127.0.0.1".into(),
            host: "www.example.com".into(),
            headers: headers.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.to_string())).collect(),
        }
    }

    fn state(&self) -> State {
        let c = self.needs.columns;
        State::pack(
            (0..self.members.len() as u32).filter(|&i| self.usable[i as usize]).collect(),
            c.contains(StateColumns::LBSTATUS).then_some(&self.lbstatus[..]),
            c.contains(StateColumns::BUSY).then_some(&self.busy[..]),
            c.contains(StateColumns::TRAFFIC).then_some(&self.traffic[..]),
            c.contains(StateColumns::LOAD).then_some(&self.load[..]),
        )
    }

    fn apply(&mut self, lbstatus: Vec<i64>) {
        if lbstatus.is_empty() {
            return;
        }
        assert_eq!(
            lbstatus.len(),
            self.members.len(),
            "the selector returned counters for the wrong number of members"
        );
        self.lbstatus = lbstatus;
    }

    /// One selection, checked as Fulcrum checks it. `None` when the selector declines. It goes
    /// through [`crate::Selector::select_owned`], as the plugin's export does.
    pub fn select(&mut self, request: &RequestView) -> Option<usize> {
        let state = self.state();
        let candidates = state.candidates.clone();
        let decision = self.selector.select_owned(request, state);
        if let Some(m) = decision.member {
            assert!(candidates.contains(&m), "the selector chose member {m}, not one of {candidates:?}");
        }
        self.apply(decision.lbstatus);
        decision.member.map(|m| m as usize)
    }

    /// A request that a sticky route sent to `member`.
    pub fn sticky(&mut self, member: usize) {
        let state = self.state();
        let lbstatus = self.selector.sticky_owned(member as u32, state);
        self.apply(lbstatus);
    }

    /// The routes of the members chosen for `n` plain requests.
    pub fn routes(&mut self, n: usize) -> Vec<String> {
        let request = Self::request(&[]);
        (0..n)
            .map(|_| self.select(&request).map_or_else(|| "-".to_string(), |m| self.members[m].route.clone()))
            .collect()
    }
}
