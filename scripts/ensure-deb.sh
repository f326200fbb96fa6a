#!/usr/bin/env bash
# ensure-deb.sh BINARY PACKAGE...: make sure BINARY is on PATH (or in /usr/sbin),
# installing the first Debian PACKAGE that apt-get can when it is missing. Prints the
# binary's path on its last line; exits non-zero with a message when it cannot be had
# (the caller then fails: tests never skip silently). The services of installed packages
# are not started (policy-rc.d).
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: ensure-deb.sh BINARY PACKAGE..." >&2; exit 2; }
binary="$1"; shift
find_bin() {
  command -v "$binary" 2>/dev/null && return 0
  for d in /usr/sbin /sbin /usr/local/sbin; do [ -x "$d/$binary" ] && { echo "$d/$binary"; return 0; }; done
  return 1
}
if bin=$(find_bin); then echo "$bin"; exit 0; fi
command -v apt-get >/dev/null || { echo "ensure-deb: $binary is missing and apt-get is not here; install $* by hand" >&2; exit 1; }
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "ensure-deb: $binary is missing and this user cannot run apt-get: run sudo apt-get install -y $1" >&2
    exit 1
  fi
fi
exec 9>"${TMPDIR:-/tmp}/portmgr-ensure-deb.lock"
flock 9
if bin=$(find_bin); then echo "$bin"; exit 0; fi
echo "ensure-deb: installing $* with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
if [ -z "$SUDO" ] && [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
installed=0
for pkg in "$@"; do
  if $SUDO apt-get install -y -qq --no-install-recommends "$pkg" >&2; then installed=1; break; fi
  # The package lists may be missing or stale on a fresh machine: refresh once, retry.
  $SUDO apt-get update -qq >&2 || true
  if $SUDO apt-get install -y -qq --no-install-recommends "$pkg" >&2; then installed=1; break; fi
done
[ "$installed" = 1 ] || { echo "ensure-deb: apt-get could not install any of: $*" >&2; exit 1; }
if bin=$(find_bin); then echo "$bin"; exit 0; fi
echo "ensure-deb: $* installed but no $binary binary found" >&2
exit 1
