#!/usr/bin/env bash
# Installs DuckDB (the Python package) into a virtual environment for the Nexmark reference
# check (bench/tests/nexmark_reference.rs). Idempotent and safe to run several times at once
# (a fresh clone's test binaries all ask together): the environment is built in a private
# directory and moved into place in one rename, under a lock where flock(1) exists. Prints
# the interpreter's path last.
#   STARLING_REFERENCE_VENV  where the environment goes (default: <repo>/target/reference-venv)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${STARLING_REFERENCE_VENV:-$repo/target/reference-venv}"
py="$venv/bin/python"
mkdir -p "$(dirname "$venv")"
if command -v flock >/dev/null 2>&1; then
    exec 9>"$venv.setup-lock"
    flock 9
fi
if ! "$py" -c 'import duckdb' >/dev/null 2>&1; then
    tmp="$venv.tmp.$$"
    rm -rf "$tmp"
    trap 'rm -rf "$tmp"' EXIT
    python3 -m venv "$tmp" >&2 || {
        echo "setup.sh: cannot create a virtual environment at $tmp (python3 -m venv failed)" >&2
        exit 1
    }
    "$tmp/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt" >&2 || {
        echo "setup.sh: pip could not install $(cat "$here/requirements.txt") from PyPI" >&2
        exit 1
    }
    rm -rf "$venv"
    mv -T "$tmp" "$venv"
    trap - EXIT
fi
"$py" -c 'import duckdb' >/dev/null 2>&1 || {
    echo "setup.sh: $py cannot import duckdb after installing it" >&2
    exit 1
}
echo "$py"
