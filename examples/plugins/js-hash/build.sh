#!/usr/bin/env bash
# Build the JavaScript hash plugin: `examples/plugins/js-hash/build.sh OUT.wasm`.
# Needs node and componentize-qjs (npm; tests/run installs it into target/js-tools) and the
# `fulcrum` binary for the WIT ($FULCRUM or PATH). --sync: Fulcrum calls plugins synchronously;
# --stub-wasi: the QuickJS runtime's WASI imports become traps inside the component, so it
# imports nothing from the host and gets no capability.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/hash.wasm}"
fulcrum="${FULCRUM:-fulcrum}"
tools="${JS_TOOLS:-$here/../../../target/js-tools}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$fulcrum" plugin wit --out-dir "$work/wit"
node "$tools/node_modules/componentize-qjs/cli.mjs" --wit "$work/wit" --world selector-plugin \
    --js "$here/hash.js" --sync --stub-wasi -o "$out" >/dev/null
