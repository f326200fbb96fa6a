#!/usr/bin/env bash
# Run every cargo-fuzz target for N seconds each (default 60): `scripts/fuzz.sh [N]`.
# Live fuzzing needs a nightly toolchain; without one this prints a SKIPPED line and
# exits 0 (scripts/test.sh calls it, and the test command runs on stable alone), unless
# FUZZ_REQUIRE_NIGHTLY=1 makes that a failure. On stable, `cargo test --test fuzz_replay`
# already ran every committed corpus input through its target's body (fuzz/bodies/).
# cargo-fuzz is installed here when missing. fuzz/ is its own workspace. Corpus seeds
# live in fuzz/corpus/<target>/ (committed); new inputs of a run go to a temp dir unless
# FUZZ_KEEP=1. A crash leaves its input in fuzz/artifacts/<target>/ and fails the script.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${1:-60}"
if ! command -v rustup >/dev/null 2>&1 || ! rustup toolchain list | grep -q '^nightly' \
  || ! cargo +nightly --version >/dev/null 2>&1; then
  if [ "${FUZZ_REQUIRE_NIGHTLY:-0}" = 1 ]; then
    echo "fuzz: no nightly toolchain (rustup toolchain install nightly)" >&2
    exit 1
  fi
  echo "RESULT fuzz: SKIPPED live fuzzing: no nightly toolchain (rustup toolchain install nightly);" \
    "the committed corpora were replayed on stable by cargo test --test fuzz_replay"
  exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz (a few minutes)" >&2
  cargo install cargo-fuzz --locked
fi
for t in range_parse registry_file c_api_sequence natpmp_reply; do
  mkdir -p "corpus/$t"
  echo "== fuzz $t for ${secs}s"
  # One job; -rss_limit_mb guards OOM; a crash leaves fuzz/artifacts/$t/crash-* and fails.
  # New inputs go to a temp dir (the first corpus dir), so a run leaves the tree clean;
  # FUZZ_KEEP=1 writes them into fuzz/corpus/$t instead, to commit the useful ones.
  new="corpus/$t"; [ "${FUZZ_KEEP:-0}" = 1 ] || new="$(mktemp -d)"
  out=$(cargo +nightly fuzz run "$t" "$new" "corpus/$t" -- -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1 2>&1) || {
    echo "$out" | tail -40
    rm -rf /dev/shm/portmgr-fuzz-* /tmp/portmgr-fuzz-* 2>/dev/null || true
    echo "RESULT fuzz $t: CRASH (see fuzz/artifacts/$t)"
    exit 1
  }
  # The targets' scratch registries (in /dev/shm, else /tmp).
  rm -rf /dev/shm/portmgr-fuzz-* /tmp/portmgr-fuzz-* 2>/dev/null || true
  runs=$(echo "$out" | grep -o 'stat::number_of_executed_units: *[0-9]*' | grep -o '[0-9]*$' || echo "?")
  echo "RESULT fuzz $t: seconds=$secs execs=$runs crashes=0"
done
