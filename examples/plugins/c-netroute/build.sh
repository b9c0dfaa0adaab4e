#!/usr/bin/env bash
# Build the C netroute plugin: `examples/plugins/c-netroute/build.sh OUT.wasm`.
# Needs Debian's clang-19, lld-19, wasi-libc and libclang-rt-19-dev-wasm32 (tests/run installs
# them) and the `fulcrum` binary (for the bindings and the component wrapping; $FULCRUM or PATH).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/netroute.wasm}"
fulcrum="${FULCRUM:-fulcrum}"
cc="${CC_WASM:-clang-19}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$fulcrum" plugin bindings c --world selector --out-dir "$work/gen" >/dev/null
# A wasi-libc reactor: malloc and string functions, no WASI imports, no main.
"$cc" --target=wasm32-wasi --sysroot=/usr -mexec-model=reactor -O2 -Wall -Werror -I"$work/gen" -Wl,--strip-all \
    -o "$work/core.wasm" "$here/netroute.c" "$work/gen/selector_plugin.c" "$work/gen/selector_plugin_component_type.o"
"$fulcrum" plugin componentize "$work/core.wasm" -o "$out"
