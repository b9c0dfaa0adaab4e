//! The conformance kit (`fulcrum plugin conform`): the built-in byrequests passes every case; a
//! plugin that ignores the weights (fault-test's round robin) fails, naming the case and the first
//! wrong answer.

use std::path::Path;

use fulcrum::plugin::builtin::TEST_PLUGIN_DIR;

use crate::support::*;

#[test]
fn the_built_in_byrequests_passes_the_kit() {
    let (code, out, err) = fulcrum_cmd(&["plugin", "conform", "byrequests"], None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("byrequests: 7 of 7 cases pass"), "{out}");
    assert!(!out.contains("FAIL"), "{out}");
}

#[test]
fn a_round_robin_fails_the_weighted_cases() {
    let file = Path::new(TEST_PLUGIN_DIR).join("fault-test.wasm");
    let (code, out, err) = fulcrum_cmd(&["plugin", "conform", file.to_str().unwrap()], None);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("ok    equal weights alternate, first listed first (2.2)"), "{out}");
    assert!(
        out.contains(
            "FAIL  loadfactor 1:2 gives web2 web1 web2, repeating (2.3): request 1: chose web1, Apache chooses web2"
        ),
        "{out}"
    );
    assert!(err.contains("fails"), "{err}");
}

#[test]
fn a_file_that_is_not_a_component_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.wasm");
    std::fs::write(&file, b"\0asm but not really").unwrap();
    let (code, out, err) = fulcrum_cmd(&["plugin", "conform", file.to_str().unwrap()], None);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains(&format!("({}): not a valid WebAssembly component", file.display())), "{err}");
}
