#!/usr/bin/env bash
# The Python package's tests, from nothing: a venv, the tools, `pip install .` (maturin
# builds the extension), then pytest (API, errors, fork/threads, the plugin), the
# cross-worker stress test under `pytest -n 4`, mypy --strict and stubtest.
# Every test uses its own temporary registry (PORTMGR_DIR) and ports 10000-11999
# (test_mapping.py: explicit ranges in 12000-12699, and the built-in service type ranges):
# below the kernel's ephemeral range; the port map is in conftest.py.
set -euo pipefail
cd "$(dirname "$0")/../.."

VENV="${PORTMGR_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating $VENV"
  python3 -m venv "$VENV"
fi
PY="$(cd "$VENV" && pwd)/bin/python"
echo "== installing the test tools"
"$PY" -m pip install -q --disable-pip-version-check \
  "maturin>=1.8,<2" pytest pytest-xdist pytest-asyncio mypy typing_extensions portpicker ephemeral-port-reserve

echo "== pip install . (maturin, abi3 wheel)"
# A target dir of its own: the python feature does not thrash other cargo builds.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target/python}"
"$PY" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps .

# Never the user's real registry, whatever the tests do (conftest sets one per test).
PORTMGR_DIR="$(mktemp -d)/registry"
export PORTMGR_DIR

echo "== pytest tests/python"
# A non-zero status fails this script, including pytest's 5 (no tests collected).
"$PY" -m pytest tests/python -p no:cacheprovider -q

echo "== stress: pytest -n 4, every worker 200 ports at once"
out="$("$PY" -m pytest tests/python/test_stress.py -n 4 --dist each -p no:cacheprovider -q 2>&1)" || {
  echo "$out"
  exit 1
}
echo "$out" | tail -n 3
# Four workers must each have run it: "4 passed".
echo "$out" | grep -Eq '(^| )4 passed' || { echo "stress test did not run on 4 workers"; exit 1; }

echo "== mypy --strict python/portmgr"
"$PY" -m mypy --strict python/portmgr

echo "== stubtest portmgr._native"
# Run from elsewhere so the installed package (with its extension) is the one checked.
(cd "$(mktemp -d)" && "$PY" -m mypy.stubtest portmgr._native)
echo "== python: all passed"
