#!/usr/bin/env bash
# Build the Python canary plugin: `examples/plugins/python-canary/build.sh OUT.wasm`.
# Needs componentize-py (PyPI): tests/run installs it into target/py-venv.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
out="${1:-$here/canary.wasm}"
componentize_py="${COMPONENTIZE_PY:-componentize-py}"
cd "$here"
# It imports WASI (Python's runtime does); Fulcrum links an empty WASI context: nothing granted.
"$componentize_py" -d "$root/wit" -w fulcrum:plugin/selector-plugin componentize app -o "$out"
