#!/usr/bin/env bash
# Build the Python canary plugin: `examples/plugins/python-canary/build.sh OUT.wasm`.
# Needs componentize-py (PyPI): tests/run installs it into target/py-venv, used when there;
# else $COMPONENTIZE_PY, else PATH.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
out="${1:-$here/canary.wasm}"
venv_tool="$root/target/py-venv/bin/componentize-py"
[ -x "$venv_tool" ] || venv_tool=componentize-py
componentize_py="${COMPONENTIZE_PY:-$venv_tool}"
cd "$here"
# It imports WASI (Python's runtime does); Fulcrum links an empty WASI context: nothing granted.
"$componentize_py" -d "$root/wit" -w fulcrum:plugin/selector-plugin componentize app -o "$out"
