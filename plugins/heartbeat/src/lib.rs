//! `heartbeat`: Apache's mod_lbmethod_heartbeat, as a Fulcrum selector plugin.
//!
//! Members report their own load (mod_heartmonitor's `busy=N&ready=M`, which Fulcrum's health
//! checks read with `hcload`), and requests go to them in proportion to the capacity they say they
//! have free (`ready`). Members without a fresh report, or reporting no free capacity, are skipped;
//! when no candidate has a report with free capacity, the candidates share by their `loadfactor`,
//! as byrequests would.
//!
//! Apache picks a member at random, weighted by `ready`; this picks by a smooth weighted round
//! robin over the balancer's lbstatus counters (byrequests' arithmetic with `ready` as the
//! weight), which gives the same proportions exactly and deterministically.

use fulcrum_sdk::selector::*;
use fulcrum_sdk::util::{smooth_weighted_charge, smooth_weighted_pick};

pub struct Heartbeat {
    lbfactor: Vec<i64>,
    /// Scratch: this request's weights and the candidates that have one.
    weights: Vec<i64>,
    pool: Vec<u32>,
}

impl Heartbeat {
    /// The candidates to choose among and their weights: those reporting free capacity, by it;
    /// else every candidate, by its loadfactor.
    fn weigh(&mut self, state: &State) {
        self.weights.clear();
        self.weights.resize(self.lbfactor.len(), 0);
        self.pool.clear();
        for &i in &state.candidates {
            if let Some(report) = state.load(i)
                && report.ready > 0
            {
                self.weights[i as usize] = i64::from(report.ready);
                self.pool.push(i);
            }
        }
        if self.pool.is_empty() {
            self.pool.extend_from_slice(&state.candidates);
            self.weights.copy_from_slice(&self.lbfactor);
        }
    }
}

impl Selector for Heartbeat {
    fn configure(balancer: &BalancerInfo) -> Result<(Self, Needs), PluginError> {
        if let Some((key, _)) = balancer.config.options.first() {
            return Err(PluginError::InvalidOption((key.clone(), "heartbeat takes no options".into())));
        }
        let lbfactor: Vec<i64> = balancer.members.iter().map(|m| i64::from(m.lbfactor)).collect();
        let needs = Needs { columns: StateColumns::LBSTATUS | StateColumns::LOAD, ..Needs::default() };
        let n = lbfactor.len();
        Ok((Heartbeat { lbfactor, weights: Vec::with_capacity(n), pool: Vec::with_capacity(n) }, needs))
    }

    fn select(&mut self, _request: &RequestView, state: &State) -> Decision {
        self.weigh(state);
        let mut lbstatus = state.lbstatus().to_vec();
        let member = smooth_weighted_pick(&self.pool, &self.weights, &mut lbstatus);
        Decision { member, lbstatus }
    }

    fn sticky(&mut self, member: u32, state: &State) -> Vec<i64> {
        self.weigh(state);
        let mut lbstatus = state.lbstatus().to_vec();
        smooth_weighted_charge(&self.pool, &self.weights, &mut lbstatus, member);
        lbstatus
    }
}

fulcrum_sdk::export_selector!(Heartbeat);

/// Small blocks from size-class free lists instead of dlmalloc: every call allocates its inputs and
/// answer, and frees them (`fulcrum_sdk::allocator`).
#[cfg(all(target_family = "wasm", not(target_feature = "atomics")))]
#[global_allocator]
static ALLOCATOR: fulcrum_sdk::allocator::PluginAllocator = fulcrum_sdk::allocator::PluginAllocator::new();

#[cfg(test)]
mod tests {
    use fulcrum_sdk::testing::SelectorHarness;

    use super::Heartbeat;

    fn harness() -> SelectorHarness<Heartbeat> {
        SelectorHarness::new(&[("http://a", "web1", 1), ("http://b", "web2", 1), ("http://c", "web3", 1)], &[]).unwrap()
    }

    fn count(routes: &[String], route: &str) -> usize {
        routes.iter().filter(|r| *r == route).count()
    }

    #[test]
    fn traffic_follows_reported_capacity() {
        let mut h = harness();
        h.set_load(0, Some((0, 30)));
        h.set_load(1, Some((5, 10)));
        h.set_load(2, None);
        let routes = h.routes(40);
        assert_eq!((count(&routes, "web1"), count(&routes, "web2"), count(&routes, "web3")), (30, 10, 0));
    }

    #[test]
    fn no_capacity_or_no_report_is_skipped_unless_nobody_reports() {
        let mut h = harness();
        h.set_load(0, Some((10, 0)));
        h.set_load(1, Some((0, 4)));
        assert_eq!(h.routes(3), ["web2", "web2", "web2"]);
        let mut h = harness();
        assert_eq!(h.routes(6), ["web1", "web2", "web3", "web1", "web2", "web3"], "nobody reports: by loadfactor");
    }

    #[test]
    fn options_are_refused() {
        assert!(SelectorHarness::<Heartbeat>::new(&[("http://a", "web1", 1)], &[("x", "1")]).is_err());
    }
}
