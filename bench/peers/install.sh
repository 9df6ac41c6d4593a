#!/usr/bin/env bash
# Create (or reuse) the Python virtual environment for the peer engines and
# install the pinned requirements. Idempotent: re-running only installs what
# is missing or at another version.
#
#   PEERS_VENV  venv location (default: <repo>/target/peers-venv)
#   PYTHON      interpreter to create it with (default: python3, needs >= 3.10)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${PEERS_VENV:-$root/target/peers-venv}"
python="${PYTHON:-python3}"
req="$here/requirements.txt"

fail() { echo "bench/peers/install.sh: ERROR: $*" >&2; exit 1; }

command -v "$python" >/dev/null 2>&1 || fail "'$python' not found (set PYTHON to a Python >= 3.10)"
"$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' \
  || fail "$("$python" --version 2>&1) is too old: Pathway and Bytewax need Python >= 3.10 (set PYTHON)"

if [ ! -x "$venv/bin/python" ]; then
  echo "creating venv $venv"
  "$python" -m venv "$venv" || fail "could not create a venv at $venv (is the venv module installed? on Debian: apt-get install python3-venv)"
fi

# Skip pip entirely when everything pinned is already installed.
if "$venv/bin/python" - "$req" <<'PY' 2>/dev/null; then
import sys
from importlib.metadata import version, PackageNotFoundError
ok = True
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if not line:
        continue
    name, want = line.split("==")
    try:
        ok &= version(name) == want
    except PackageNotFoundError:
        ok = False
sys.exit(0 if ok else 1)
PY
  echo "peers venv up to date: $venv"
else
  echo "installing $(grep -v '^#' "$req" | xargs) into $venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req" \
    || fail "pip install -r $req failed (see pip's message above). PyPI must be reachable; both engines ship binary wheels for Linux x86_64/aarch64 and CPython 3.10-3.12."
fi

"$venv/bin/python" -c 'import pathway, bytewax' \
  || fail "the packages installed but do not import (see above)"
echo "ok: pathway $("$venv/bin/python" -c 'import pathway; print(pathway.__version__)' 2>/dev/null), bytewax $("$venv/bin/python" -c 'from importlib.metadata import version; print(version("bytewax"))')"
