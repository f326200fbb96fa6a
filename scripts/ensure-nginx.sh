#!/usr/bin/env bash
# Make sure an nginx binary is available for tests/mapping_nginx.rs; install the Debian
# package when it is missing. Prints the path of the nginx binary on its last line.
# Exits non-zero with a message when nginx cannot be had (the test then fails: it never
# skips silently).
set -euo pipefail
find_nginx() {
  command -v nginx 2>/dev/null && return 0
  for p in /usr/sbin/nginx /usr/local/sbin/nginx /usr/local/nginx/sbin/nginx; do
    [ -x "$p" ] && { echo "$p"; return 0; }
  done
  return 1
}
if bin=$(find_nginx); then echo "$bin"; exit 0; fi
if ! command -v apt-get >/dev/null; then
  echo "ensure-nginx: nginx is not installed and apt-get is missing; install nginx by hand" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "ensure-nginx: nginx is not installed and this user cannot run apt-get (not root, no password-less sudo); run: sudo apt-get install -y nginx-light" >&2
    exit 1
  fi
fi
# A lock so parallel test runs do not fight over dpkg.
exec 9>"${TMPDIR:-/tmp}/portmgr-ensure-nginx.lock"
flock 9
if bin=$(find_nginx); then echo "$bin"; exit 0; fi
echo "ensure-nginx: installing nginx with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >&2 || true
# nginx-light on older Debian, nginx (which carries the same binary) on newer ones.
# policy-rc.d keeps the package from starting a system nginx on port 80.
if [ -z "$SUDO" ] && [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
$SUDO apt-get install -y -qq --no-install-recommends nginx-light >&2 \
  || $SUDO apt-get install -y -qq --no-install-recommends nginx >&2 \
  || { echo "ensure-nginx: apt-get could not install nginx-light or nginx" >&2; exit 1; }
if bin=$(find_nginx); then echo "$bin"; exit 0; fi
echo "ensure-nginx: nginx was installed but no nginx binary was found" >&2
exit 1
