//! `spin-test`: a selector that runs until the host's deadline on request, for Fulcrum's own tests.
//!
//! Not embedded in the binary. Unlike `fault-test`, it imports no WASI, so Fulcrum calls it right
//! on the async worker thread, as it calls the built-ins and most Rust plugins: the case where a
//! runaway call could hold up the worker's other connections. A request with header `x-fault: spin`
//! logs "spinning until the deadline" and loops forever; any other is served round robin.

use fulcrum_sdk::selector::*;

pub struct SpinTest {
    turn: u32,
}

impl Selector for SpinTest {
    fn configure(_balancer: &BalancerInfo) -> Result<(Self, Needs), PluginError> {
        Ok((SpinTest { turn: 0 }, Needs { headers: vec!["x-fault".into()], ..Needs::default() }))
    }

    fn select(&mut self, request: &RequestView, state: &State) -> Decision {
        if request.headers.first().is_some_and(|(_, v)| v == "spin") {
            log(Level::Info, "spinning until the deadline");
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        let i = self.turn as usize % state.candidates.len();
        self.turn = self.turn.wrapping_add(1);
        Decision { member: Some(state.candidates[i]), lbstatus: Vec::new() }
    }
}

fulcrum_sdk::export_selector!(SpinTest);
