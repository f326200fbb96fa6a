#!/usr/bin/env bash
# A real third-party suite, unmodified: chalice's tests/functional/test_local.py (it
# defines its own bind(0)-and-close `unused_tcp_port` fixture) against the chalice
# release from PyPI, under pytest-xdist, first as it is, then with only the ini option
# `portmgr_port_fixtures = unused_tcp_port` added (`-o` on the command line). A recording
# plugin notes every value of the fixture and whether the registry held it.
#
#   tests/thirdparty/chalice.sh CHALICE_CHECKOUT   (a checkout of github.com/aws/chalice;
#                                                  its PyPI sdist carries no tests)
set -euo pipefail
src="$(cd "$1" && pwd)"
root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="${PORTMGR_CHALICE_VENV:-$root/.venv-chalice}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check chalice pytest pytest-xdist hypothesis "boto3<2" "websocket-client<2" requests
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target/python}" "$venv/bin/pip" install -q --disable-pip-version-check "$root"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# The suite runs the `chalice` command it installed.
export PATH="$venv/bin:$PATH"
export PORTMGR_DIR="$tmp/registry" PYTHONPATH="$root/tests/thirdparty" PORTMGR_RECORD_FIXTURES=unused_tcp_port
cd "$src"
for mode in plain portmgr; do
  export PORTMGR_RECORD_FILE="$tmp/$mode.jsonl"
  : >"$PORTMGR_RECORD_FILE"
  opts=()
  [ "$mode" = portmgr ] && opts=(-o "portmgr_port_fixtures=unused_tcp_port")
  echo "== $mode: pytest tests/functional/test_local.py -n 4 ${opts[*]}"
  "$venv/bin/python" -m pytest tests/functional/test_local.py -n 4 -p portmgr_record -p no:cacheprovider -q "${opts[@]}" | tail -n 2
  "$venv/bin/python" - "$PORTMGR_RECORD_FILE" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
lo, hi = map(int, open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
eph = sum(lo <= r["port"] <= hi for r in rows)
leased = sum(r["leased"] for r in rows)
print(f"   unused_tcp_port values: {len(rows)}; from the registry: {leased}; in the ephemeral range {lo}-{hi}: {eph}")
PY
done
