# Sourced by bindings/{go,node,java}/run.sh (from the repository root, with `root` set):
# what each binding's test script starts with.
#
#   fail MESSAGE             print FAIL: MESSAGE and exit 1
#   binding_work LANG        set `work`: with PORTMGR_XLANG_WORKERS (scripts/test.sh) a
#                            directory kept there for the one cross-language run of every
#                            binding (scripts/xlang.sh); alone, a temp directory removed
#                            at exit. PORTMGR_DIR goes under it: never the user's registry.
#   binding_libportmgr       build libportmgr (release) and, unless --no-install, install
#                            it into "$work/prefix" with scripts/install-c.sh

fail() { echo "FAIL: $*" >&2; exit 1; }

binding_work() {
  if [ -n "${PORTMGR_XLANG_WORKERS:-}" ]; then
    work="$PORTMGR_XLANG_WORKERS/$1"
    mkdir -p "$work"
  else
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
  fi
  export PORTMGR_DIR="$work/registry"
}

binding_libportmgr() {
  if [ "${1:-}" = --no-install ]; then
    echo "== building libportmgr"
    cargo build --quiet --release -p portmgr-capi || fail "cargo build -p portmgr-capi"
  else
    echo "== building libportmgr and installing it into a temp prefix"
    cargo build --quiet --release -p portmgr-capi || fail "cargo build -p portmgr-capi"
    scripts/install-c.sh --prefix "$work/prefix" --no-build >/dev/null
  fi
}
