//! `bybusyness`: Apache's mod_lbmethod_bybusyness, as a Fulcrum selector plugin.
//!
//! The candidate with the fewest requests in flight wins; ties go to the one byrequests would pick
//! (greatest `lbstatus` after every candidate got `lbstatus += lbfactor`), and the winner pays back
//! the candidates' total factor, as in Apache 2.4.

use fulcrum_sdk::selector::*;

pub struct ByBusyness {
    lbfactor: Vec<i64>,
}

impl Selector for ByBusyness {
    fn configure(balancer: &BalancerInfo) -> Result<(Self, Needs), PluginError> {
        if let Some((key, _)) = balancer.config.options.first() {
            return Err(PluginError::InvalidOption((key.clone(), "bybusyness takes no options".into())));
        }
        let lbfactor = balancer.members.iter().map(|m| i64::from(m.lbfactor)).collect();
        let needs = Needs { columns: StateColumns::LBSTATUS | StateColumns::BUSY, ..Needs::default() };
        Ok((ByBusyness { lbfactor }, needs))
    }

    fn select(&mut self, _request: &RequestView, state: &State) -> Decision {
        let mut lbstatus = state.lbstatus().to_vec();
        let busy = state.busy();
        let mut best: Option<usize> = None;
        let mut total = 0i64;
        for &i in &state.candidates {
            let i = i as usize;
            lbstatus[i] = lbstatus[i].saturating_add(self.lbfactor[i]);
            total = total.saturating_add(self.lbfactor[i]);
            let better = match best {
                None => true,
                Some(b) => busy[i] < busy[b] || (busy[i] == busy[b] && lbstatus[i] > lbstatus[b]),
            };
            if better {
                best = Some(i);
            }
        }
        if let Some(b) = best {
            lbstatus[b] = lbstatus[b].saturating_sub(total);
        }
        Decision { member: best.map(|b| b as u32), lbstatus }
    }

    fn sticky(&mut self, member: u32, state: &State) -> Vec<i64> {
        let mut lbstatus = state.lbstatus().to_vec();
        fulcrum_sdk::util::smooth_weighted_charge(&state.candidates, &self.lbfactor, &mut lbstatus, member);
        lbstatus
    }
}

fulcrum_sdk::export_selector!(ByBusyness);

/// Small blocks from size-class free lists instead of dlmalloc: every call allocates its inputs and
/// answer, and frees them (`fulcrum_sdk::allocator`).
#[cfg(all(target_family = "wasm", not(target_feature = "atomics")))]
#[global_allocator]
static ALLOCATOR: fulcrum_sdk::allocator::PluginAllocator = fulcrum_sdk::allocator::PluginAllocator::new();
