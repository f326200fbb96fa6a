#!/usr/bin/env bash
# The Go binding's tests (called by scripts/test.sh; runs alone too, on a fresh machine
# with go 1.22+, cargo, cc and pkg-config):
#
#   1. build libportmgr (`cargo build --release -p portmgr-capi`) and install it into a
#      temp prefix with scripts/install-c.sh; the Go packages find it through pkg-config
#      (PKG_CONFIG_PATH) and load it through an rpath (CGO_LDFLAGS), as users do;
#   2. go vet ./... (the module and the testdata/manybins tree);
#   3. go test -count=1 ./...: the API, every error kind, Listen, a fork/exec child that
#      inherits nothing, 3 processes x 200 ports, 8 test binaries x 25 parallel tests x 5
#      runs (and the bind(0) comparison), the freeport package, the runnable examples;
#   4. the benchmark (Allocate + Release against net.Listen(":0") + Close), briefly;
#   5. cross-language: the reliability suite's mixed concurrency run
#      (tests/reliability/concurrency.rs) with 4 Go client processes beside the Rust, C
#      and Python ones (Python when a Python with portmgr is there): 0 duplicates, exact
#      audit. It builds the Rust test suite if it is not built yet (scripts/test.sh has
#      built it by then); PORTMGR_GO_XLANG=0 skips it; under
#      scripts/test.sh (PORTMGR_XLANG_WORKERS set) the worker is left for its one run of every
#      binding at once (scripts/xlang.sh).
#
# Registries: temp directories only. Ports: 61000-61999 (see main_test.go); step 5 uses
# the reliability suite's own.
set -euo pipefail
cd "$(dirname "$0")/../.."
root="$(pwd)"

. scripts/binding-env.sh
command -v go >/dev/null 2>&1 || fail "no go command on PATH (install Go 1.22 or newer)"
if ! command -v pkg-config >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get install -y --no-install-recommends pkg-config >/dev/null 2>&1 \
    || { $sudo apt-get update >/dev/null 2>&1 && $sudo apt-get install -y --no-install-recommends pkg-config >/dev/null; }
fi

binding_work go

binding_libportmgr
export PKG_CONFIG_PATH="$work/prefix/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
export CGO_ENABLED=1
export CGO_LDFLAGS="-Wl,-rpath,$work/prefix/lib${CGO_LDFLAGS:+ $CGO_LDFLAGS}"
pkg-config --exists portmgr || fail "pkg-config does not find portmgr in $PKG_CONFIG_PATH"
echo "$(go version); libportmgr $(pkg-config --modversion portmgr) from $work/prefix"

cd "$root/bindings/go"
echo "== gofmt, go vet ./..."
[ -z "$(gofmt -l .)" ] || fail "not gofmt-formatted: $(gofmt -l . | tr '\n' ' ')"
go vet ./... || fail "go vet"
(cd testdata/manybins && go vet ./...) || fail "go vet (testdata/manybins)"

echo "== go test -count=1 ./..."
if ! go test -count=1 -v ./... >"$work/go-test.log" 2>&1; then
  cat "$work/go-test.log" >&2
  fail "go test"
fi
grep -E '^(--- |ok |manybins:)|processes x|run [0-9]: ' "$work/go-test.log" | grep -v -- '--- PASS: .*/' || true

echo "== go test -bench (smoke test: Allocate+Release vs net.Listen(127.0.0.1:0)+Close)"
go test -count=1 -run '^$' -bench . -benchtime "${PORTMGR_GO_BENCHTIME:-200ms}" . | grep -E '^Benchmark|^ok' \
  || fail "go test -bench"

if [ -n "${PORTMGR_XLANG_WORKERS:-}" ] || [ "${PORTMGR_GO_XLANG:-1}" = 1 ]; then
  (cd "$root/bindings/go" && go build -buildvcs=false -o "$work/go-worker" ./cmd/portmgr-worker) || fail "go build ./cmd/portmgr-worker"
  if [ -n "${PORTMGR_XLANG_WORKERS:-}" ]; then
    echo "== cross-language: the Go worker is left for scripts/test.sh's one run of every binding"
    ln -sf "$work/go-worker" "$PORTMGR_XLANG_WORKERS/go-worker"
  else
    echo "== cross-language: the reliability suite's mixed concurrency run with Go clients"
    mkdir -p "$work/xlang"
    ln -sf "$work/go-worker" "$work/xlang/go-worker"
    "$root/scripts/xlang.sh" "$work/xlang"
  fi
fi
echo "== Go: all passed"
