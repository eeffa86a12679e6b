#!/usr/bin/env bash
# Create (or reuse) the virtual environment at $VENV with semcolor and its test extras installed.
# The full dependency install runs only when pyproject.toml changed since the venv was built
# (a hash stamp inside the venv); the editable install of this checkout is refreshed every time (seconds).
set -euo pipefail
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
stamp="$VENV/.semcolor-deps"
want="$(sha256sum pyproject.toml | cut -c1-16)"
if [[ ! -x "$VENV/bin/python" ]]; then
    echo "creating virtual environment at $VENV"
    "$PYTHON" -m venv "$VENV"
fi
if [[ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]]; then
    echo "installing semcolor[test] into $VENV (torch, ray[data,train,serve], ... a few minutes the first time)"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -e '.[test]'
    echo "$want" > "$stamp"
else
    "$VENV/bin/python" -m pip install -q --no-deps -e .
fi
