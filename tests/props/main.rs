//! Property tests (bounded fuzzing) of the host's parsers, run by `cargo test`: the configuration
//! loader, sticky-route parsing and path normalisation (`path::canonical`). Each property
//! runs a few hundred to a few thousand cases; `PROPTEST_CASES=N` runs a longer campaign and
//! `PROPTEST_RNG_SEED=N` repeats one (`cargo test -p fulcrum --test props`).

mod config;
mod path;
mod sticky;
mod support;
