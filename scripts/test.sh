#!/usr/bin/env bash
# Runs every test of portmgr: Rust (unit, integration, multi-process, reliability, nginx),
# C/C++ (plus valgrind and AddressSanitizer), Python (pytest, xdist, mypy, stubtest), and
# the benchmarks' smoke test. Installs what it needs itself (a venv, maturin, pytest,
# valgrind, nginx). Takes about 15 minutes on 2 cores from a fresh clone.
set -euo pipefail
cd "$(dirname "$0")/.."
# Tests never touch the user's real registry.
PORTMGR_DIR="$(mktemp -d)/registry"
export PORTMGR_DIR

echo "== cargo test (Rust: core, CLI, C ABI header, mapping, nginx, reliability quick mode, doctests)"
cargo test --release

echo "== cargo test --features failpoints (reliability: SIGKILL, SIGSTOP and panic at every mutation step)"
cargo test --release --features failpoints --test reliability_crash

echo "== tests/c/run.sh (C and C++ consumers, valgrind, ASan, pkg-config install)"
bash tests/c/run.sh

echo "== tests/python/run.sh (Python package, pytest plugin, xdist stress, mypy, stubtest)"
bash tests/python/run.sh

echo "== bench --quick (smoke test of the benchmarks against the peers; no figures asserted)"
python3 bench/run.py --quick

echo "== all tests passed"
