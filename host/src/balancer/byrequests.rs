//! A native reference `byrequests` (Apache's mod_lbmethod_byrequests), next to the state it works
//! on: the balancer's own tests run without WebAssembly, and a differential test
//! (`plugin::tests`) holds the embedded Wasm `byrequests` plugin to the same order.
//!
//! Each candidate gets `lbstatus += lbfactor`, the strictly greatest wins (ties: the first
//! listed), and the winner pays back the sum of the candidates' factors. A request a sticky route
//! decided is charged the same way with the winner fixed (Apache's `updatelbstatus`).
//! The sums wrap rather than saturate, as in the SDK's `smooth_weighted_pick` (httpd's `int`
//! counters do not saturate either).

use super::select::{
    BalancerSpec, MemberSelector, RequestInfo, SelectState, Selection, SelectorFault, SelectorNeeds, StateColumns,
};

#[derive(Debug)]
pub struct NativeByRequests {
    lbfactor: Vec<i64>,
    needs: SelectorNeeds,
}

impl NativeByRequests {
    pub fn new(spec: &BalancerSpec<'_>) -> NativeByRequests {
        NativeByRequests {
            lbfactor: spec.members.iter().map(|m| i64::from(m.lbfactor)).collect(),
            needs: SelectorNeeds {
                columns: StateColumns { lbstatus: true, ..StateColumns::default() },
                ..SelectorNeeds::default()
            },
        }
    }

    /// Add each candidate's factor; the sum of the factors.
    fn charge(&self, candidates: &[u32], lbstatus: &mut [i64]) -> i64 {
        let mut total = 0i64;
        for &i in candidates {
            let i = i as usize;
            lbstatus[i] = lbstatus[i].wrapping_add(self.lbfactor[i]);
            total = total.wrapping_add(self.lbfactor[i]);
        }
        total
    }
}

impl MemberSelector for NativeByRequests {
    fn name(&self) -> &str {
        "native-byrequests"
    }

    fn needs(&self) -> &SelectorNeeds {
        &self.needs
    }

    fn select(&mut self, _request: &RequestInfo<'_>, state: &SelectState<'_>) -> Result<Selection, SelectorFault> {
        let mut lbstatus = state.lbstatus.to_vec();
        let total = self.charge(state.candidates, &mut lbstatus);
        let best = state.candidates.iter().copied().fold(None::<u32>, |best, i| match best {
            Some(b) if lbstatus[i as usize] <= lbstatus[b as usize] => Some(b),
            _ => Some(i),
        });
        if let Some(b) = best {
            lbstatus[b as usize] = lbstatus[b as usize].wrapping_sub(total);
        }
        Ok(Selection { member: best, lbstatus })
    }

    fn sticky(
        &mut self,
        _request: &RequestInfo<'_>,
        member: u32,
        state: &SelectState<'_>,
    ) -> Result<Vec<i64>, SelectorFault> {
        let mut lbstatus = state.lbstatus.to_vec();
        let total = self.charge(state.candidates, &mut lbstatus);
        if let Some(slot) = lbstatus.get_mut(member as usize) {
            *slot = slot.wrapping_sub(total);
        }
        Ok(lbstatus)
    }
}
