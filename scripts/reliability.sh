#!/usr/bin/env bash
# The reliability suite in long mode (see RELIABILITY.md). Quick mode runs inside
# `cargo test --release` (tests/reliability.rs) and scripts/test.sh (the crash half,
# tests/reliability_crash.rs, needs --features failpoints).
#
# Knobs (environment; defaults are the long mode's):
#   PORTMGR_RELIABILITY_SECONDS          concurrency run length            (30)
#   PORTMGR_RELIABILITY_PROCS            concurrency processes             (16)
#   PORTMGR_RELIABILITY_RANDOM_KILLS     SIGKILLs at random moments        (1000)
#   PORTMGR_RELIABILITY_KILLS_PER_POINT  SIGKILLs at each failpoint        (50)
#   PORTMGR_RELIABILITY_FORKS            forks with a busy thread          (5000)
#   PORTMGR_RELIABILITY_SWAP_OPENS       opens during the dir/symlink race (20000)
#   PORTMGR_RELIABILITY_FAULT_NTH        strace: fault the 1st..Nth call   (6)
#   PORTMGR_RELIABILITY_SEED             crash-suite RNG seed (random; printed)
#   FUZZ_SECONDS                         per fuzz target, 0 = skip         (600)
# Every scenario prints a "RESULT ..." line; they are collected in
# target/reliability-long.log for RELIABILITY.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export PORTMGR_RELIABILITY_LONG=1
export PORTMGR_RELIABILITY_SECONDS="${PORTMGR_RELIABILITY_SECONDS:-30}"
export PORTMGR_RELIABILITY_PROCS="${PORTMGR_RELIABILITY_PROCS:-16}"
export PORTMGR_RELIABILITY_RANDOM_KILLS="${PORTMGR_RELIABILITY_RANDOM_KILLS:-1000}"
export PORTMGR_RELIABILITY_KILLS_PER_POINT="${PORTMGR_RELIABILITY_KILLS_PER_POINT:-50}"
export PORTMGR_RELIABILITY_FORKS="${PORTMGR_RELIABILITY_FORKS:-5000}"
export PORTMGR_RELIABILITY_SWAP_OPENS="${PORTMGR_RELIABILITY_SWAP_OPENS:-20000}"
export PORTMGR_RELIABILITY_FAULT_NTH="${PORTMGR_RELIABILITY_FAULT_NTH:-6}"
FUZZ_SECONDS="${FUZZ_SECONDS:-600}"
# Tests never touch the user's real registry.
PORTMGR_DIR="$(mktemp -d)/registry"
export PORTMGR_DIR
# C clients join the concurrency run when libportmgr.so sits next to the test binaries.
cargo build --release -p portmgr-capi
if [ -x .venv/bin/python ]; then export PORTMGR_RELIABILITY_PYTHON="${PORTMGR_RELIABILITY_PYTHON:-$(pwd)/.venv/bin/python}"; fi
tdir="${CARGO_TARGET_DIR:-target}"
log="$tdir/reliability-long.log"
mkdir -p "$tdir"
{
  echo "# portmgr reliability, long mode: $(date -u +%Y-%m-%dT%H:%MZ), nproc $(nproc), $(uname -r)"
  cargo test --release --test reliability -- --nocapture --test-threads=1 2>&1 || true
  cargo test --release --features failpoints --test reliability_crash -- --nocapture --test-threads=1 2>&1 || true
} | tee "$log.raw" | grep -E 'RESULT|^# |^test result|^  ' | sed 's/^test .* \.\.\. RESULT/RESULT/' | tee "$log"
if [ "$FUZZ_SECONDS" != 0 ]; then
  scripts/fuzz.sh "$FUZZ_SECONDS" 2>&1 | tee -a "$log.raw" | grep -E '^(RESULT|==)' | tee -a "$log" || true
fi
if grep -q 'FAILED\|panicked\|CRASH' "$log.raw" || ! grep -q 'test result: ok' "$log.raw"; then
  echo "reliability: FAILED (details in $log.raw)"
  exit 1
fi
echo "reliability: all scenarios passed; figures in $log"
