#!/usr/bin/env bash
# The C and C++ consumer tests of libportmgr (called by scripts/test.sh; runs alone too):
#
#   1. the committed include/portmgr.h is what build.rs generates (not stale);
#   2. install into a temp prefix with scripts/install-c.sh; every program below is built
#      from that prefix with pkg-config, as users do;
#   3. tests/c/*.c (gcc -std=c11) and tests/cpp/*.cpp (g++ -std=c++17), -Wall -Wextra
#      -Werror, run: API behaviour, 8 threads x 200 allocations, the C++ wrapper;
#   4. the C tests under valgrind (definite leaks and errors fail) and built with
#      AddressSanitizer; the C API test linked statically;
#   5. cross-language: a C process and a Rust process allocate from one registry at once;
#   6. the README's C example, compiled with exactly `cc app.c $(pkg-config --cflags --libs portmgr)`.
#
# Every test uses its own temp registry directory and ports 26000-27999 on loopback.
# Installs what it lacks (gcc, g++, pkg-config, valgrind) with apt-get.
set -euo pipefail
cd "$(dirname "$0")/../.."
root="$(pwd)"

need() { # need COMMAND PACKAGE
  command -v "$1" >/dev/null 2>&1 && return 0
  echo "== installing $2 (for $1)"
  local sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get install -y --no-install-recommends "$2" >/dev/null 2>&1 \
    || { $sudo apt-get update >/dev/null 2>&1 && $sudo apt-get install -y --no-install-recommends "$2" >/dev/null; }
}
need gcc gcc
need g++ g++
need pkg-config pkg-config
need valgrind valgrind

passed=0
pass() { echo "PASS: $*"; passed=$((passed + 1)); }
fail() { echo "FAIL: $*" >&2; exit 1; }

work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

echo "== building libportmgr (release, no python feature)"
# --lib: the C library of portmgr-capi too (a target filter alone would build only the example).
cargo build --quiet --release -p portmgr-capi -p portmgr --lib --example c_abi_peer || fail "cargo build"

# 1. Stale header: the build regenerates include/portmgr.h; it must equal the committed one.
if git rev-parse --is-inside-work-tree >/dev/null 2>&1 && git ls-files --error-unmatch include/portmgr.h >/dev/null 2>&1; then
  git diff --quiet HEAD -- include/portmgr.h \
    || fail "include/portmgr.h differs from the committed header (src/ffi changed): commit the regenerated header"
  pass "include/portmgr.h is up to date with src/ffi"
else
  echo "(not a git checkout: stale-header check left to tests/c_abi.rs)"
fi

# 2. Install into a prefix.
prefix="$work/prefix"
scripts/install-c.sh --prefix "$prefix" --no-build >/dev/null
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
pkg-config --exists portmgr || fail "pkg-config does not find portmgr in $PKG_CONFIG_PATH"
[ "$(pkg-config --modversion portmgr)" = "$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' Cargo.toml | head -1)" ] \
  || fail "portmgr.pc has the wrong version"
pass "installed into a prefix: $(cd "$prefix" && find . -type f -o -type l | sort | tr '\n' ' ')"

cflags="$(pkg-config --cflags portmgr)"
libs="$(pkg-config --libs portmgr) -Wl,-rpath,$prefix/lib"
bin="$work/bin"; mkdir -p "$bin"
warn=(-Wall -Wextra -Werror)

# 3. Build and run the consumer tests.
c_tests=()
for src in tests/c/*.c; do
  name="$(basename "$src" .c)"
  gcc -std=c11 "${warn[@]}" -pedantic -g $cflags -Itests/c "$src" -o "$bin/$name" $libs -lpthread \
    || fail "compiling $src"
  gcc -std=c11 "${warn[@]}" -g -O1 -fsanitize=address -fno-omit-frame-pointer $cflags -Itests/c "$src" \
    -o "$bin/$name.asan" $libs -lpthread || fail "compiling $src with -fsanitize=address"
  case "$name" in test_*) c_tests+=("$name") ;; esac
done
for src in tests/cpp/*.cpp; do
  name="$(basename "$src" .cpp)"
  g++ -std=c++17 "${warn[@]}" -pedantic -g $cflags "$src" -o "$bin/$name" $libs -lpthread || fail "compiling $src"
done
pass "compiled tests/c (-std=c11) and tests/cpp (-std=c++17) with -Wall -Wextra -Werror"

n=0
run_test() { # run_test LABEL PROGRAM [WRAPPER...]
  local label="$1" prog="$2"; shift 2
  n=$((n + 1))
  local dir="$work/reg-$n"
  if PORTMGR_DIR="$work/reg-default-$n" "$@" "$bin/$prog" "$dir" >"$work/out-$n" 2>&1; then
    pass "$label: $(grep -E 'held at once|all checks passed' "$work/out-$n" | head -1)"
  else
    cat "$work/out-$n" >&2
    fail "$label"
  fi
}
for t in "${c_tests[@]}"; do run_test "$t" "$t"; done
for src in tests/cpp/*.cpp; do run_test "$(basename "$src" .cpp) (C++)" "$(basename "$src" .cpp)"; done

# 4. valgrind, AddressSanitizer, static linking.
for t in "${c_tests[@]}"; do
  run_test "$t under valgrind" "$t" valgrind --quiet --error-exitcode=1 --leak-check=full \
    --errors-for-leak-kinds=definite --show-leak-kinds=definite
done
for t in "${c_tests[@]}"; do
  run_test "$t with AddressSanitizer" "$t.asan" env ASAN_OPTIONS=detect_leaks=1:halt_on_error=1
done
gcc -std=c11 "${warn[@]}" $cflags -Itests/c tests/c/test_api.c -o "$bin/test_api_static" \
  "$prefix/lib/libportmgr.a" $(pkg-config --static --libs-only-l portmgr | sed 's/-lportmgr//') \
  || fail "linking test_api statically"
if ldd "$bin/test_api_static" | grep -q libportmgr; then fail "test_api_static needs libportmgr.so"; fi
run_test "test_api linked statically" test_api_static

# 5. Cross-language: C and Rust allocate concurrently from one registry directory.
reg="$work/reg-xlang"; go="$work/go"; finish="$work/finish"; count=400
"$bin/xlang_peer" "$reg" 26400 27999 "$count" "$work/ports-c" "$go" "$finish" >"$work/xlang-c.log" 2>&1 &
pids+=($!); c_pid=$!
"${CARGO_TARGET_DIR:-$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')}/release/examples/c_abi_peer" \
  "$reg" 26400 27999 "$count" "$work/ports-rust" "$go" "$finish" >"$work/xlang-rust.log" 2>&1 &
pids+=($!); rust_pid=$!
sleep 0.2; touch "$go"
for _ in $(seq 600); do
  if grep -qx done "$work/ports-c" 2>/dev/null && grep -qx done "$work/ports-rust" 2>/dev/null; then break; fi
  sleep 0.1
done
# Both hold everything now: count and compare before anyone releases.
all="$(cat "$work/ports-c" "$work/ports-rust" | grep -vx done || true)"
total="$(printf '%s\n' "$all" | grep -c . || true)"
dups="$(printf '%s\n' "$all" | sort | uniq -d | grep -c . || true)"
touch "$finish"
wait "$c_pid" || { cat "$work/xlang-c.log" >&2; fail "C peer"; }
wait "$rust_pid" || { cat "$work/xlang-rust.log" >&2; fail "Rust peer"; }
pids=()
[ "$total" = $((2 * count)) ] || fail "cross-language: $total ports held, wanted $((2 * count))"
[ "$dups" = 0 ] || fail "cross-language: $dups port(s) handed to both the C and the Rust process"
pass "cross-language: C and Rust processes held $total ports from one registry at once, 0 duplicates"

# 6. The README's C example, built exactly as users would.
app="$work/app.c"; cp bindings/c/examples/allocate.c "$app"
(cd "$work" && cc app.c $(pkg-config --cflags --libs portmgr) -o app) || fail "cc app.c \$(pkg-config --cflags --libs portmgr)"
out="$(PORTMGR_DIR="$work/reg-example" LD_LIBRARY_PATH="$prefix/lib" "$work/app")" || fail "the C example"
pass "cc app.c \$(pkg-config --cflags --libs portmgr) against the prefix: $out"

echo "== C/C++: $passed passed, 0 failed"
