//! `bytraffic`: Apache's mod_lbmethod_bytraffic, as a Fulcrum selector plugin.
//!
//! The candidate whose traffic (bytes to plus bytes from it) divided by its lbfactor is smallest
//! wins; ties go to the first listed. No counters are changed.

use fulcrum_sdk::selector::*;

pub struct ByTraffic {
    lbfactor: Vec<i64>,
}

impl Selector for ByTraffic {
    fn configure(balancer: &BalancerInfo) -> Result<(Self, Needs), PluginError> {
        if let Some((key, _)) = balancer.config.options.first() {
            return Err(PluginError::InvalidOption((key.clone(), "bytraffic takes no options".into())));
        }
        let lbfactor = balancer.members.iter().map(|m| i64::from(m.lbfactor.max(1))).collect();
        let needs = Needs { columns: StateColumns::TRAFFIC, ..Needs::default() };
        Ok((ByTraffic { lbfactor }, needs))
    }

    fn select(&mut self, _request: &RequestView, state: &State) -> Decision {
        let traffic = state.traffic();
        let member = state.candidates.iter().copied().min_by_key(|&i| traffic[i as usize] / self.lbfactor[i as usize]);
        Decision { member, lbstatus: Vec::new() }
    }
}

fulcrum_sdk::export_selector!(ByTraffic);

/// Small blocks from size-class free lists instead of dlmalloc: every call allocates its inputs and
/// answer, and frees them (`fulcrum_sdk::allocator`).
#[cfg(all(target_family = "wasm", not(target_feature = "atomics")))]
#[global_allocator]
static ALLOCATOR: fulcrum_sdk::allocator::PluginAllocator = fulcrum_sdk::allocator::PluginAllocator::new();
