#!/usr/bin/env bash
# The Node binding's tests (called by scripts/test.sh; runs alone too, on a fresh machine
# with Node 20+, npm, cargo and cc):
#
#   1. build libportmgr (`cargo build --release -p portmgr-capi`);
#   2. `npm install ./bindings/node` from a throwaway project, as users do: the package's
#      install step copies the library into bindings/node/native/ and installs its one
#      dependency (koffi, prebuilt: no compiler, no Node header download) from the
#      registry; then import 'portmgr' and 'portmgr/get-port' from that project;
#   3. node --test in bindings/node: the API, every error kind but Internal, listen (a real
#      TCP connection, close-on-exec), the get-port subpath (get-port 7's tests and
#      errors), and the parallel run: 8 processes x 200 getPort() x 5, 0 duplicates,
#      0 bind failures;
#   4. the benchmark (allocate + release against net.createServer().listen(0) + close), briefly;
#   5. cross-language: the reliability suite's mixed concurrency run
#      (tests/reliability/concurrency.rs) with 4 Node client processes beside the Rust, C
#      and Python ones: 0 duplicates, exact audit. PORTMGR_NODE_XLANG=0 skips it; under
#      scripts/test.sh (PORTMGR_XLANG_WORKERS set) the worker is left for its one run of every
#      binding at once (scripts/xlang.sh).
#
# Registries: temp directories only. Ports: 62000-62999 (see test/helpers.js); step 5
# uses the reliability suite's own.
set -euo pipefail
cd "$(dirname "$0")/../.."
root="$(pwd)"

. scripts/binding-env.sh
command -v node >/dev/null 2>&1 || fail "no node on PATH (install Node.js 20 or newer)"
command -v npm >/dev/null 2>&1 || fail "no npm on PATH"
major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$major" -ge 20 ] || fail "Node $(node --version): the binding needs Node 20 or newer"

binding_work node
unset PORTMGR_LIB                      # the package's own copy, as installed

binding_libportmgr --no-install

echo "== npm install ./bindings/node (from a new project)"
mkdir "$work/app"
(cd "$work/app" && npm init -y >/dev/null && npm install --no-audit --no-fund "$root/bindings/node" >"$work/npm.log" 2>&1) \
  || { cat "$work/npm.log" >&2; fail "npm install ./bindings/node"; }
(cd "$work/app" && node --input-type=module -e "
  const pm = await import('portmgr');
  const {default: getPort} = await import('portmgr/get-port');
  const l = pm.allocate({range: [62990, 62999]});
  const p = await getPort();
  console.log('node ' + process.version + ', libportmgr ' + pm.version() + ' from ' + pm.libPath + ': allocate ' + l.port + ', getPort ' + p);
  l.release();
") || fail "import 'portmgr' from the project"

cd "$root/bindings/node"
echo "== node --test"
if ! node --test --test-reporter=spec test/*.test.js >"$work/test.log" 2>&1; then
  cat "$work/test.log" >&2
  fail "node --test"
fi
grep -E '^ℹ (tests|pass|fail|skipped)|parallel' "$work/test.log" || true

echo "== benchmark (smoke test: allocate+release vs net.createServer().listen(0)+close)"
node bench/bench.js --ops "${PORTMGR_NODE_BENCH_OPS:-300}" --rounds 3 || fail "bench/bench.js"

if [ -n "${PORTMGR_XLANG_WORKERS:-}" ] || [ "${PORTMGR_NODE_XLANG:-1}" = 1 ]; then
  ln -sf "$root/bindings/node/bin/reliability-worker.js" "$work/node-worker"
  if [ -n "${PORTMGR_XLANG_WORKERS:-}" ]; then
    echo "== cross-language: the Node worker is left for scripts/test.sh's one run of every binding"
    ln -sf "$work/node-worker" "$PORTMGR_XLANG_WORKERS/node-worker"
  else
    echo "== cross-language: the reliability suite's mixed concurrency run with Node clients"
    mkdir -p "$work/xlang"
    ln -sf "$work/node-worker" "$work/xlang/node-worker"
    "$root/scripts/xlang.sh" "$work/xlang"
  fi
fi
echo "== Node: all passed"
