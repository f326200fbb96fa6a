#!/usr/bin/env bash
# The Java binding's tests (called by scripts/test.sh; runs alone too, on a fresh machine
# with cargo, a JDK 17+ and Maven; installs openjdk-17-jdk-headless and maven with apt-get
# when they are missing). Maven resolves JNA, JUnit and the plugins from Maven Central.
#
#   1. build libportmgr (`cargo build --release -p portmgr-capi`) and install it into a
#      temp prefix with scripts/install-c.sh; JNA loads it through -Djna.library.path;
#   2. mvn -q verify in bindings/java: compile (-Xlint:all -Werror), then the Surefire
#      executions: the API, every error kind, close twice, a closed registry, 16 threads,
#      TestSocketUtils, no leaked descriptors (default-test); the fd hand-over with
#      --add-opens (handover); 4 forks x 200 ports bound at once from one registry
#      (forks), then 0 duplicates across them (forks-check);
#   3. the benchmark (allocate + release against new ServerSocket(0) + close), briefly;
#   4. cross-language: the reliability suite's mixed concurrency run
#      (tests/reliability/concurrency.rs) with 4 Java client processes beside the Rust, C
#      and Python ones: 0 duplicates, exact audit. It builds the Rust test suite if it is not
#      built yet; PORTMGR_JAVA_XLANG=0 skips it; under
#      scripts/test.sh (PORTMGR_XLANG_WORKERS set) the worker is left for its one run of every
#      binding at once (scripts/xlang.sh).
#
# Registries: temp directories only. Ports: 63000-63999 (see pom.xml); step 4 uses the
# reliability suite's own.
set -euo pipefail
cd "$(dirname "$0")/../.."
root="$(pwd)"

. scripts/binding-env.sh
if ! command -v mvn >/dev/null 2>&1 || ! command -v javac >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get install -y --no-install-recommends openjdk-17-jdk-headless maven >/dev/null 2>&1 \
    || { $sudo apt-get update >/dev/null 2>&1 && $sudo apt-get install -y --no-install-recommends openjdk-17-jdk-headless maven >/dev/null; } \
    || fail "no JDK 17+ and Maven (apt-get install openjdk-17-jdk-headless maven)"
fi

binding_work java

binding_libportmgr
lib="$work/prefix/lib"
echo "$(javac -version 2>&1); $(mvn -v 2>/dev/null | head -1 | sed 's/\x1b\[[0-9;]*m//g'); libportmgr from $lib"

cd "$root/bindings/java"
echo "== mvn -q verify (JUnit 5 under Surefire: default-test, handover, forks x4, forks-check)"
rm -rf target/surefire-reports
if ! mvn -q -B verify -Djna.library.path="$lib" >"$work/mvn.log" 2>&1; then
  cat "$work/mvn.log" >&2
  fail "mvn verify"
fi
grep -E '^(fork|forks:)' "$work/mvn.log" || true
# The totals of every Surefire execution, from its reports (mvn -q prints none).
read -r tests failed skipped < <(cat target/surefire-reports/TEST-*.xml | tr ' ' '\n' | awk -F'"' '
  /^tests=/ {t+=$2} /^failures=/ {f+=$2} /^errors=/ {f+=$2} /^skipped=/ {s+=$2} END {print t+0, f+0, s+0}')
[ "$tests" -gt 0 ] || fail "Surefire ran no test"
echo "java: $((tests - failed - skipped)) passed, $failed failed, $skipped skipped"

cp="target/test-classes:target/classes:$(cat target/classpath.txt)"
echo "== benchmark (smoke test: allocate+release vs new ServerSocket(0)+close; figures: BenchMain 21 2000)"
java -Djna.library.path="$lib" -Dportmgr.test.tmp="$work/bench" -cp "$cp" dev.portmgr.BenchMain \
  "${PORTMGR_JAVA_BENCH_ROUNDS:-5}" "${PORTMGR_JAVA_BENCH_ROUND:-500}" || fail "BenchMain"

if [ -n "${PORTMGR_XLANG_WORKERS:-}" ] || [ "${PORTMGR_JAVA_XLANG:-1}" = 1 ]; then
  cat >"$work/java-worker" <<LAUNCH
#!/bin/sh
exec java -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djna.library.path="$lib" -cp "$root/bindings/java/$(echo "$cp" | sed "s|:target/|:$root/bindings/java/target/|g")" dev.portmgr.ReliabilityWorker "\$@"
LAUNCH
  chmod +x "$work/java-worker"
  if [ -n "${PORTMGR_XLANG_WORKERS:-}" ]; then
    echo "== cross-language: the Java worker is left for scripts/test.sh's one run of every binding"
    ln -sf "$work/java-worker" "$PORTMGR_XLANG_WORKERS/java-worker"
  else
    echo "== cross-language: the reliability suite's mixed concurrency run with Java clients"
    mkdir -p "$work/xlang"
    ln -sf "$work/java-worker" "$work/xlang/java-worker"
    "$root/scripts/xlang.sh" "$work/xlang"
  fi
fi
echo "== Java: all passed"
