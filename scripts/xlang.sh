#!/usr/bin/env bash
# The cross-language stress run: the reliability suite's mixed concurrency test
# (tests/reliability/concurrency.rs: Rust threads, C and Python client processes) with
# every binding worker found in DIR beside them, all on one registry at once: 0
# duplicates, 0 bind failures, exact audit. `scripts/xlang.sh DIR`
#
# DIR holds the workers the bindings' run.sh scripts leave there: go-worker (a binary),
# java-worker (a launcher script), node-worker (a script); each found one adds 4 client
# processes. A binding's run.sh run alone calls this with its own worker only;
# scripts/test.sh lets every binding leave its worker in one DIR (PORTMGR_XLANG_WORKERS)
# and calls this once, with Go, Java and Node clients at once.
set -euo pipefail
dir="${1:?usage: scripts/xlang.sh DIR}"
cd "$(dirname "$0")/.."
fail() { echo "FAIL: $*" >&2; exit 1; }

procs=12 # the suite's own: 4 C, 4 Python and 4 Rust client processes
want=()
env_args=()
for lang in go java node; do
  w="$dir/$lang-worker"
  [ -e "$w" ] || continue
  procs=$((procs + 4))
  case "$lang" in
    go) env_args+=("PORTMGR_RELIABILITY_GO_WORKER=$w" "PORTMGR_RELIABILITY_GO_PROCS=4"); want+=("Go clients 4") ;;
    java) env_args+=("PORTMGR_RELIABILITY_JAVA_WORKER=$w" "PORTMGR_RELIABILITY_JAVA_PROCS=4"); want+=("Java clients 4") ;;
    node) env_args+=("PORTMGR_RELIABILITY_NODE_WORKER=$w" "PORTMGR_RELIABILITY_NODE_PROCS=4"); want+=("Node clients 4") ;;
  esac
done
[ "${#want[@]}" -gt 0 ] || fail "no binding worker in $dir"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if ! env "${env_args[@]}" PORTMGR_RELIABILITY_PROCS="$procs" \
    cargo test --quiet --release --test reliability -- concurrency:: --nocapture >"$log" 2>&1; then
  cat "$log" >&2
  fail "the mixed concurrency run with ${want[*]}"
fi
result="$(grep '^RESULT concurrency' "$log" || true)"
echo "$result"
for w in "${want[@]}"; do
  case "$result" in
    *"$w"*) ;;
    *) fail "the concurrency run did not have $w: $result" ;;
  esac
done
