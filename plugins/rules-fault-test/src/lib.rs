//! `rules-fault-test`: a rules plugin that misbehaves on request, for Fulcrum's own tests that a
//! rules fault is contained and counted like a selector's.
//!
//! Not embedded in the binary, and kept out of the folder of the other test plugins (tests copy it
//! where they need it). The request header `x-rules-fault` chooses the misbehaviour in
//! `on-request`: `trap` (a panic, which aborts: a Wasm trap), `spin` (an endless loop, stopped only
//! by the host's deadline), `grow` (allocates until the memory cap traps it). Any other request
//! gets `X-Rules: ok` set on its response.

use fulcrum_sdk::rules::*;

pub struct RulesFaultTest;

impl Rules for RulesFaultTest {
    fn configure(_config: &PluginConfig) -> Result<(Self, Needs), PluginError> {
        Ok((RulesFaultTest, Needs { request_headers: vec!["x-rules-fault".into()], ..Needs::default() }))
    }

    fn on_request(&mut self, request: &RequestView, _env: &[(String, String)]) -> Outcome {
        match request.headers.first().map(|(_, v)| v.as_str()).unwrap_or("") {
            "trap" => panic!("rules-fault-test: trap requested"),
            "spin" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "grow" => {
                // Reserve (without touching) 16 MiB at a time: the cap, not the deadline, stops it.
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(Vec::with_capacity(16 << 20));
                    std::hint::black_box(&hoard);
                }
            }
            _ => Outcome::default(),
        }
    }

    fn on_response(&mut self, _request: &RequestView, _response: &ResponseView, _env: &[(String, String)]) -> Outcome {
        let set = HeaderAction { op: HeaderOp::Set, name: "X-Rules".into(), value: "ok".into() };
        Outcome { env: Vec::new(), headers: vec![set] }
    }
}

fulcrum_sdk::export_rules!(RulesFaultTest);
