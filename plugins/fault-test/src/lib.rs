//! `fault-test`: a selector that misbehaves on request, for Fulcrum's own fault-containment tests.
//!
//! Not embedded in the binary. The request header named by option `header` (default `x-fault`)
//! chooses the misbehaviour: `trap` (a panic, which aborts: a Wasm trap), `spin` (an endless loop,
//! stopped only by the host's deadline), `grow` (allocates until the memory cap traps it),
//! `bad-member` (answers a member index that does not exist), `decline` (answers no member), `wasi`
//! (calls `wasi:cli/environment.get-environment`, which Fulcrum traps unless the plugin's config
//! grants `cli`; granted, the environment is empty and the request is served), `print` (writes a
//! line to WASI stdout with a blocking write, which wasmtime-wasi carries out on a Tokio runtime;
//! granted, the line is discarded and the request is served). Any other request is served round
//! robin over the candidates.

use fulcrum_sdk::selector::*;

mod wasi {
    fulcrum_sdk::wit_bindgen::generate!({
        path: "wit",
        world: "fulcrum:fault-test/wasi-user",
        runtime_path: "::fulcrum_sdk::wit_bindgen::rt",
        generate_all,
    });
}

pub struct FaultTest {
    turn: u32,
}

impl Selector for FaultTest {
    fn configure(balancer: &BalancerInfo) -> Result<(Self, Needs), PluginError> {
        let mut header = "x-fault".to_string();
        for (key, value) in &balancer.config.options {
            match key.as_str() {
                "header" => header = value.clone(),
                other => return Err(PluginError::InvalidOption((other.into(), "unknown option".into()))),
            }
        }
        Ok((FaultTest { turn: 0 }, Needs { headers: vec![header], ..Needs::default() }))
    }

    fn select(&mut self, request: &RequestView, state: &State) -> Decision {
        let fault = request.headers.first().map(|(_, v)| v.as_str()).unwrap_or("");
        match fault {
            "trap" => panic!("fault-test: trap requested"),
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
            "bad-member" => Decision { member: Some(u32::MAX - 1), lbstatus: Vec::new() },
            "decline" => Decision { member: None, lbstatus: Vec::new() },
            "wasi" => {
                // Granted, the environment Fulcrum gives is empty: then serve as usual.
                let environment = wasi::wasi::cli::environment::get_environment();
                let member = if environment.is_empty() { Some(state.candidates[0]) } else { None };
                Decision { member, lbstatus: Vec::new() }
            }
            "print" => {
                let stdout = wasi::wasi::cli::stdout::get_stdout();
                let written = stdout.blocking_write_and_flush(b"fault-test: print requested\n");
                Decision { member: written.is_ok().then(|| state.candidates[0]), lbstatus: Vec::new() }
            }
            _ => {
                let i = self.turn as usize % state.candidates.len();
                self.turn = self.turn.wrapping_add(1);
                Decision { member: Some(state.candidates[i]), lbstatus: Vec::new() }
            }
        }
    }
}

fulcrum_sdk::export_selector!(FaultTest);
