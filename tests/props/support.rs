//! Shared generators and the bounded proptest configuration.

use proptest::prelude::*;
use proptest::test_runner::Config;

/// `cases` unless `PROPTEST_CASES` says otherwise; no regression files are written.
pub fn config(cases: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(cases);
    Config { cases, failure_persistence: None, ..Config::default() }
}

/// One of `options`, owned.
pub fn pick(options: &'static [&'static str]) -> impl Strategy<Value = String> {
    proptest::sample::select(options).prop_map(str::to_string)
}

/// Short strings mostly of characters that matter to the parsers under test.
pub fn noise(alphabet: &'static [char], max: usize) -> impl Strategy<Value = String> {
    let c = prop_oneof![4 => proptest::sample::select(alphabet), 1 => any::<char>()];
    proptest::collection::vec(c, 0..max).prop_map(|v| v.into_iter().collect())
}
