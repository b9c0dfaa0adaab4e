//! The configuration loader on any text: no panic, and every error names the file.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let file = Path::new("fuzz.toml");
    if let Err(e) = fulcrum::config::Config::parse(text, file) {
        assert!(e.to_string().starts_with("fuzz.toml"), "{e}");
        let lines = text.split('\n').count();
        for p in &e.problems {
            if let Some(loc) = p.location {
                assert!(loc.line >= 1 && loc.line <= lines, "line {} of {lines}", loc.line);
            }
        }
    }
});
