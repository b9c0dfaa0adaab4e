#!/usr/bin/env bash
# Build the Zig A/B plugin: `examples/plugins/zig-ab/build.sh OUT.wasm`.
# Needs Zig (PyPI `ziglang`; tests/run installs it into target/py-venv, whose python is used
# when there; else $ZIG_PYTHON, else python3) and the `fulcrum` binary for the bindings and the
# component ($FULCRUM or PATH).
# Zig brings its own wasi-libc, so nothing comes from apt. The first build fills Zig's cache
# (about two minutes on two cores); later builds take seconds.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/ab.wasm}"
fulcrum="${FULCRUM:-fulcrum}"
venv_python="$here/../../../target/py-venv/bin/python"
[ -x "$venv_python" ] || venv_python=python3
zig=("${ZIG_PYTHON:-$venv_python}" -m ziglang)
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$fulcrum" plugin bindings c --world selector --out-dir "$work/gen" >/dev/null
# Zig 0.17 has no @cImport: the C header becomes a Zig file.
"${zig[@]}" translate-c "$work/gen/selector_plugin.h" -target wasm32-wasi -lc > "$work/selector_c.zig"
cp "$here/ab.zig" "$work/ab.zig"
(cd "$work" && "${zig[@]}" build-exe ab.zig gen/selector_plugin.c gen/selector_plugin_component_type.o -I gen -lc \
    -target wasm32-wasi -fno-entry -mexec-model=reactor -O ReleaseSmall -fstrip -femit-bin=core.wasm)
"$fulcrum" plugin componentize "$work/core.wasm" -o "$out"
