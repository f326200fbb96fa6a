#!/usr/bin/env bash
# Runs every test of portmgr: Rust, C/C++, Python. Installs what it needs itself.
set -euo pipefail
cd "$(dirname "$0")/.."
# Tests never touch the user's real registry.
PORTMGR_DIR="$(mktemp -d)/registry"
export PORTMGR_DIR
echo "== cargo test"
cargo test --release
for part in tests/c/run.sh tests/python/run.sh; do
  if [ -f "$part" ]; then
    echo "== $part"
    bash "$part"
  fi
done
echo "== all tests passed"
