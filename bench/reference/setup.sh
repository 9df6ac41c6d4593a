#!/usr/bin/env bash
# Installs DuckDB (the Python package) into a virtual environment for the Nexmark reference
# check (bench/tests/nexmark_reference.rs). Idempotent; prints the interpreter's path last.
#   STARLING_REFERENCE_VENV  where the environment goes (default: <repo>/target/reference-venv)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${STARLING_REFERENCE_VENV:-$repo/target/reference-venv}"
py="$venv/bin/python"
if ! "$py" -c 'import duckdb' >/dev/null 2>&1; then
    python3 -m venv "$venv" >&2 || {
        echo "setup.sh: cannot create a virtual environment at $venv (python3 -m venv failed)" >&2
        exit 1
    }
    "$py" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt" >&2 || {
        echo "setup.sh: pip could not install $(cat "$here/requirements.txt") from PyPI" >&2
        exit 1
    }
fi
echo "$py"
