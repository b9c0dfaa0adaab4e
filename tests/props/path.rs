//! Path normalisation (`path::canonical`): no panic on any path; what it returns starts
//! with `/`, has no `//`, no `.` or `..` segment and no escape of an unreserved character, and is
//! its own canonical form; `%2F` (any case), `%00` and a climb above the root are refused; and the
//! result is exactly that of a small reference model of the documented steps.

use fulcrum::path::{Refused, canonical};
use proptest::prelude::*;

use crate::support::{config, noise, pick};

const PATH_CHARS: &[char] = &[
    '/', '/', '/', '.', '.', '%', '%', '2', 'e', 'E', 'f', 'F', '0', '4', '1', '5', '7', 'a', 'z', '~', '-', '_', ';',
    '=', ' ', 'é',
];

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// The documented steps, written plainly: escapes left to right (a bad one, `%2F` or `%00` ends
/// it), unreserved escapes decoded; then a stack of segments.
fn model(raw: &str) -> Result<String, Refused> {
    if !raw.starts_with('/') {
        return Err(Refused::NotAPath);
    }
    let mut decoded = String::new();
    let mut rest = raw;
    while let Some(c) = rest.chars().next() {
        if c == '%' {
            let byte = rest.get(1..3).filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
            let Some(byte) = byte.and_then(|h| u8::from_str_radix(h, 16).ok()) else {
                return Err(Refused::BadEscape);
            };
            if byte == b'/' || byte == 0 {
                return Err(Refused::EncodedSlashOrNul);
            }
            if unreserved(byte) {
                decoded.push(byte as char)
            } else {
                decoded.push_str(&rest[..3])
            }
            rest = &rest[3..];
        } else {
            decoded.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    let segments: Vec<&str> = decoded[1..].split('/').collect();
    let directory = matches!(segments.last(), Some(&"" | &"." | &".."));
    let mut stack: Vec<&str> = Vec::new();
    for segment in segments {
        match segment {
            "" | "." => {}
            ".." => {
                stack.pop().ok_or(Refused::AboveRoot)?;
            }
            s => stack.push(s),
        }
    }
    let mut out = format!("/{}", stack.join("/"));
    if directory && !stack.is_empty() {
        out.push('/');
    }
    Ok(out)
}

fn check_canonical(raw: &str, out: &str) -> Result<(), TestCaseError> {
    prop_assert!(out.starts_with('/'), "{raw:?} → {out:?}");
    prop_assert!(!out.contains("//"), "{raw:?} → {out:?}");
    for segment in out.split('/') {
        prop_assert!(segment != "." && segment != "..", "{raw:?} → {out:?}");
    }
    let bytes = out.as_bytes();
    for (i, _) in out.match_indices('%') {
        let hex = out.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok());
        prop_assert!(hex.is_some_and(|b| !unreserved(b) && b != b'/' && b != 0), "{raw:?} → {out:?} at {i}");
        prop_assert!(bytes.len() >= i + 3);
    }
    prop_assert_eq!(canonical(out).map(|c| c.into_owned()), Ok(out.to_string()), "not idempotent for {:?}", raw);
    Ok(())
}

fn path() -> impl Strategy<Value = String> {
    let segment = prop_oneof![
        pick(&[
            "", ".", "..", "%2e", "%2E%2e", ".%2e", "a", "b%41", "%7e", "%20", "%2F", "%2f", "%00", "%", "%4", "%zz"
        ]),
        noise(PATH_CHARS, 6),
    ];
    proptest::collection::vec(segment, 0..8).prop_map(|s| format!("/{}", s.join("/")))
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn any_string_never_panics(raw in any::<String>()) {
        if let Ok(out) = canonical(&raw) {
            check_canonical(&raw, &out)?;
        }
    }

    #[test]
    fn paths_are_canonical_or_refused_as_the_model_says(raw in prop_oneof![path(), noise(PATH_CHARS, 24)]) {
        let got = canonical(&raw).map(|c| c.into_owned());
        prop_assert_eq!(&got, &model(&raw), "{:?}", raw);
        let lower = raw.to_ascii_lowercase();
        if lower.contains("%2f") || lower.contains("%00") {
            prop_assert!(got.is_err(), "{raw:?} has an encoded slash or NUL but was accepted");
        }
        match got {
            Ok(out) => check_canonical(&raw, &out)?,
            Err(Refused::NotAPath) => prop_assert!(!raw.starts_with('/')),
            Err(_) => {}
        }
    }

    /// A path made only of plain segments and `..`: refused exactly when it climbs above the root.
    #[test]
    fn climbing_above_the_root_is_refused(steps in proptest::collection::vec(any::<bool>(), 0..12)) {
        let mut depth = 0i32;
        let mut lowest = 0;
        let mut raw = String::new();
        for down in &steps {
            raw.push_str(if *down { "/d" } else { "/.." });
            depth += if *down { 1 } else { -1 };
            lowest = lowest.min(depth);
        }
        let raw = if raw.is_empty() { "/".to_string() } else { raw };
        prop_assert_eq!(canonical(&raw).is_err(), lowest < 0, "{:?}", raw);
    }
}
