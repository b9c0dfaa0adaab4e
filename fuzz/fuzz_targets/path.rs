//! Path normalisation on any path: no panic; a canonical result starts with `/`, has no `//` and
//! no dot segment, and is its own canonical form; `%2F` and `%00` are always refused.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../host/src/path.rs"]
mod path;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else { return };
    if let Ok(out) = path::canonical(raw) {
        assert!(out.starts_with('/') && !out.contains("//"), "{raw:?} -> {out:?}");
        assert!(out.split('/').all(|s| s != "." && s != ".."), "{raw:?} -> {out:?}");
        assert_eq!(path::canonical(&out).as_deref(), Ok(&*out), "not idempotent: {raw:?}");
        let lower = raw.to_ascii_lowercase();
        assert!(!lower.contains("%2f") && !lower.contains("%00"), "accepted {raw:?}");
    }
});
