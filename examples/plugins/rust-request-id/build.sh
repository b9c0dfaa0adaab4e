#!/usr/bin/env bash
# Build the Rust request-id rules plugin: `examples/plugins/rust-request-id/build.sh OUT.wasm`.
# Needs the Rust toolchain with the wasm32-unknown-unknown target and the `fulcrum` binary
# ($FULCRUM or PATH) to make the component.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/request-id.wasm}"
fulcrum="${FULCRUM:-fulcrum}"
target="${CARGO_TARGET_DIR:-$here/../../../target/examples}"
env -u RUSTFLAGS -u CARGO_ENCODED_RUSTFLAGS -u CARGO_BUILD_TARGET \
    cargo build --quiet --release --target wasm32-unknown-unknown --manifest-path "$here/Cargo.toml" --target-dir "$target"
"$fulcrum" plugin componentize "$target/wasm32-unknown-unknown/release/request_id.wasm" -o "$out"
