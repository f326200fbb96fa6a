#!/usr/bin/env bash
# `portmgr serve` against the clients users have: the real portpicker (PyPI) through
# PORTSERVER_ADDRESS, 8 processes at once; then schemathesis (PyPI) fuzzing the REST API
# from the OpenAPI document the server serves (no 5xx, every response as documented).
# Starts its own server on its own registry (pool 64500-64999) and stops it.
set -euo pipefail
cd "$(dirname "$0")/../.."

BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/portmgr"
[ -x "$BIN" ] || cargo build --release -p portmgr-cli
VENV="${PORTMGR_SERVE_VENV:-.venv-serve}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating $VENV"
  python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
echo "== installing portpicker, schemathesis, pytest (and pytest-asyncio, which the project's pytest config names)"
"$PY" -m pip install -q --disable-pip-version-check portpicker schemathesis pytest pytest-asyncio

tmp="$(mktemp -d)"
name="@portmgr-ci-$$"
cleanup() {
  [ -n "${server:-}" ] && kill "$server" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
PORTMGR_RANGE=64500-64999 "$BIN" --registry "$tmp/reg" serve --http 127.0.0.1:0 --portserver "$name" \
  --rate-limit 100000 >"$tmp/lines" &
server=$!
for _ in $(seq 100); do
  [ "$(wc -l <"$tmp/lines")" -ge 2 ] && break
  sleep 0.1
done
url="$(awk '/^http /{print $2}' "$tmp/lines")"
[ -n "$url" ] || { echo "portmgr serve did not start" >&2; exit 1; }
echo "== server: $url and $name"

echo "== pytest tests/serve (portpicker through PORTSERVER_ADDRESS)"
PORTSERVER_ADDRESS="$name" PORTMGR_BIN="$BIN" PORTMGR_SERVE_REGISTRY="$tmp/reg" \
  "$PY" -m pytest tests/serve -p no:cacheprovider -q

echo "== schemathesis against $url/openapi.json"
"$VENV/bin/schemathesis" run "$url/openapi.json" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --max-examples 30 --no-color 2>&1 | tail -n 25

echo "== bench/serve.py --quick (smoke test of the server's benchmark; figures reported, not asserted)"
bash scripts/ensure-deb.sh wrk wrk >/dev/null
"$PY" bench/serve.py --quick | grep -E 'median:|pairs/s|adds'
