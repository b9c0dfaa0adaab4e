//! `rules-fault-test`: a rules plugin that misbehaves on request, for Fulcrum's own tests that a
//! rules fault is contained and counted like a selector's.
//!
//! Not embedded in the binary, and kept out of the folder of the other test plugins (tests copy it
//! where they need it). The request header `x-rules-fault` chooses the misbehaviour in
//! `on-request`: `trap` (a panic, which aborts: a Wasm trap), `spin` (an endless loop, stopped only
//! by the host's deadline), `grow` (allocates until the memory cap traps it), `grow-small` (the
//! same in 1 KiB blocks, which the SDK's allocator serves from its size classes). Any other request
//! gets `X-Rules: ok` set on its response. It uses the SDK's allocator, as the built-in plugins do.

use fulcrum_sdk::rules::*;

pub struct RulesFaultTest {
    x_rules: Target,
}

impl Rules for RulesFaultTest {
    fn configure(_config: &PluginConfig, needs: &mut Needs) -> Result<Self, PluginError> {
        needs.request_header("x-rules-fault");
        Ok(RulesFaultTest { x_rules: needs.target("X-Rules") })
    }

    fn on_request(&mut self, call: &RequestCall<'_>) -> Outcome {
        match call.header("x-rules-fault").unwrap_or("") {
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
            "grow-small" => {
                // 1 KiB at a time: size-class blocks, carved from chunks until one cannot be had.
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(Vec::with_capacity(1024));
                    std::hint::black_box(&hoard);
                }
            }
            _ => Outcome::default(),
        }
    }

    fn on_response(&mut self, _call: &ResponseCall<'_>) -> Outcome {
        let mut outcome = Outcome::default();
        outcome.header(HeaderOp::Set, self.x_rules, "ok");
        outcome
    }
}

fulcrum_sdk::export_rules!(RulesFaultTest);

#[cfg(all(target_family = "wasm", not(target_feature = "atomics")))]
#[global_allocator]
static ALLOCATOR: fulcrum_sdk::allocator::PluginAllocator = fulcrum_sdk::allocator::PluginAllocator::new();
