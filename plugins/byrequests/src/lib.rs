//! `byrequests`: Apache's mod_lbmethod_byrequests, as a Fulcrum selector plugin.
//!
//! A smooth weighted round robin over Apache's `lbstatus` counters, which Fulcrum keeps (one
//! authoritative copy per balancer) and hands in on every call: each candidate gets
//! `lbstatus += lbfactor`, the strictly greatest wins (ties: the first listed), and the winner pays
//! back the sum of the candidates' factors. Sticky requests are charged the same way
//! (`updatelbstatus`), so the order matches Apache's exactly (docs/apache-behaviour.md §2).

use fulcrum_sdk::selector::*;
use fulcrum_sdk::util::{smooth_weighted_charge, smooth_weighted_pick};

pub struct ByRequests {
    lbfactor: Vec<i64>,
}

impl Selector for ByRequests {
    fn configure(balancer: &BalancerInfo) -> Result<(Self, Needs), PluginError> {
        if let Some((key, _)) = balancer.config.options.first() {
            return Err(PluginError::InvalidOption((key.clone(), "byrequests takes no options".into())));
        }
        let lbfactor = balancer.members.iter().map(|m| i64::from(m.lbfactor)).collect();
        let needs = Needs { columns: StateColumns::LBSTATUS, ..Needs::default() };
        Ok((ByRequests { lbfactor }, needs))
    }

    fn select(&mut self, request: &RequestView, state: &State) -> Decision {
        self.select_owned(request, state.clone())
    }

    fn sticky(&mut self, member: u32, state: &State) -> Vec<i64> {
        self.sticky_owned(member, state.clone())
    }

    /// What the plugin's export calls: the counters are changed where they arrived and go back as
    /// the answer, never copied in the plugin.
    fn select_owned(&mut self, _request: &RequestView, mut state: State) -> Decision {
        let mut lbstatus = state.take_lbstatus();
        let member = smooth_weighted_pick(&state.candidates, &self.lbfactor, &mut lbstatus);
        Decision { member, lbstatus }
    }

    fn sticky_owned(&mut self, member: u32, mut state: State) -> Vec<i64> {
        let mut lbstatus = state.take_lbstatus();
        smooth_weighted_charge(&state.candidates, &self.lbfactor, &mut lbstatus, member);
        lbstatus
    }
}

fulcrum_sdk::export_selector!(ByRequests);

/// Small blocks from size-class free lists instead of dlmalloc: every call allocates its inputs and
/// answer, and frees them (`fulcrum_sdk::allocator`).
#[cfg(all(target_family = "wasm", not(target_feature = "atomics")))]
#[global_allocator]
static ALLOCATOR: fulcrum_sdk::allocator::PluginAllocator = fulcrum_sdk::allocator::PluginAllocator::new();

#[cfg(test)]
mod tests {
    use fulcrum_sdk::testing::SelectorHarness;

    use super::ByRequests;

    fn harness(weights: (u32, u32)) -> SelectorHarness<ByRequests> {
        SelectorHarness::new(&[("http://a", "web1", weights.0), ("http://b", "web2", weights.1)], &[]).unwrap()
    }

    #[test]
    fn apache_sequences() {
        assert_eq!(harness((1, 1)).routes(4), ["web1", "web2", "web1", "web2"]);
        assert_eq!(harness((1, 2)).routes(6), ["web2", "web1", "web2", "web2", "web1", "web2"]);
    }

    #[test]
    fn sticky_requests_charge_the_counters() {
        let mut h = harness((1, 1));
        assert_eq!(h.routes(1), ["web1"]);
        for _ in 0..3 {
            h.sticky(0);
        }
        assert_eq!(h.routes(6), ["web2", "web2", "web2", "web2", "web1", "web2"]);
    }

    #[test]
    fn unusable_members_are_skipped() {
        let mut h = harness((1, 1));
        h.set_usable(0, false);
        assert_eq!(h.routes(3), ["web2", "web2", "web2"]);
    }

    #[test]
    fn options_are_refused() {
        assert!(SelectorHarness::<ByRequests>::new(&[("http://a", "web1", 1)], &[("x", "1")]).is_err());
    }
}
