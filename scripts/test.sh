#!/usr/bin/env bash
# Runs every test of portmgr: Rust (unit, integration, multi-process, reliability, nginx),
# C/C++ (plus valgrind and AddressSanitizer), Python (pytest, xdist, mypy, stubtest), and
# portmgr serve against portpicker and schemathesis, the benchmarks' smoke test and,
# with a nightly toolchain, 60 s of fuzzing per target (on stable the fuzz corpora are
# replayed by cargo test). Installs what it needs itself (venvs, maturin, pytest,
# portpicker, schemathesis, valgrind, nginx, cargo-fuzz).
set -euo pipefail
cd "$(dirname "$0")/.."
# Tests never touch the user's real registry.
PORTMGR_DIR="$(mktemp -d)/registry"
export PORTMGR_DIR

echo "== the core crate alone compiles no skin's stack (a Rust program that depends on portmgr)"
if cargo tree -p portmgr -e normal,build --prefix none | grep -E '^(clap|pyo3|cbindgen|humantime|hickory-[a-z]+|tokio|stun_codec|bytecodec|igd-next|attohttpc) '; then
  echo "the portmgr library crate pulls in a skin's dependency above: keep it behind its feature" >&2
  exit 1
fi

echo "== cargo build --release (the library, the portmgr command, libportmgr.so/.a: the C clients of the reliability run link it)"
cargo build --release

echo "== cargo test (Rust: core, CLI, C ABI header, mapping, nginx, reliability quick mode, doctests)"
cargo test --release

echo "== cargo test --features failpoints (reliability: SIGKILL, SIGSTOP and panic at every mutation step)"
cargo test --release --features failpoints --test reliability_crash

echo "== tests/c/run.sh (C and C++ consumers, valgrind, ASan, pkg-config install)"
bash tests/c/run.sh

echo "== tests/python/run.sh (Python package, pytest plugin, xdist stress, mypy, stubtest)"
bash tests/python/run.sh

echo "== tests/serve/run.sh (portmgr serve: the real portpicker from 8 processes, schemathesis on the REST API)"
bash tests/serve/run.sh

# Each binding leaves its reliability worker in one directory, for one cross-language
# run with all of them at once (below) instead of one run per binding.
xlang_dir="$(mktemp -d)"
export PORTMGR_XLANG_WORKERS="$xlang_dir"
trap 'rm -rf "$xlang_dir"' EXIT

echo "== bindings/go/run.sh (Go binding: go vet, go test, many test binaries, bench smoke test)"
bash bindings/go/run.sh

echo "== bindings/node/run.sh (Node binding: npm install ./bindings/node, node --test incl. get-port drop-in and 8 processes x 200 x 5, bench smoke test)"
bash bindings/node/run.sh

echo "== bindings/java/run.sh (Java binding: mvn verify with 4 Surefire forks, bench smoke test)"
bash bindings/java/run.sh

echo "== cross-language: one mixed concurrency run, Rust, C, Python, Go, Java and Node clients on one registry at once"
bash scripts/xlang.sh "$xlang_dir"
unset PORTMGR_XLANG_WORKERS

echo "== bench --quick (smoke test of the benchmarks against the peers; no figures asserted)"
# Reuses the Python build of tests/python/run.sh.
PORTMGR_BENCH_PY_TARGET="$PWD/target/python" python3 bench/run.py --quick

echo "== fuzz: every cargo-fuzz target for 60 s (needs nightly: without one it says SKIPPED and passes;"
echo "   the corpora already ran on stable in cargo test --test fuzz_replay; installs cargo-fuzz if missing)"
bash scripts/fuzz.sh 60

echo "== all tests passed"
