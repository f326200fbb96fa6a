#!/usr/bin/env bash
# Build libportmgr for C and C++ and install it into a prefix:
#
#   scripts/install-c.sh [--prefix DIR] [--libdir DIR] [--destdir DIR] [--no-build]
#
#   PREFIX/lib/libportmgr.so.X.Y.Z (+ .so.0.MINOR and .so links), PREFIX/lib/libportmgr.a
#   PREFIX/include/portmgr.h, PREFIX/include/portmgr.hpp (C++17 wrapper)
#   PREFIX/lib/pkgconfig/portmgr.pc
#
# Then: cc app.c $(pkg-config --cflags --libs portmgr)   (PKG_CONFIG_PATH=PREFIX/lib/pkgconfig
# for a prefix pkg-config does not search; add -Wl,-rpath,PREFIX/lib, or set LD_LIBRARY_PATH,
# when PREFIX/lib is not on the loader's path). Defaults: --prefix /usr/local.
# The build is `cargo build --release -p portmgr-capi` (the C library alone: no clap, no pyo3).
set -euo pipefail
cd "$(dirname "$0")/.."

prefix=/usr/local
libdir=
destdir=
build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix="$2"; shift 2 ;;
    --prefix=*) prefix="${1#*=}"; shift ;;
    --libdir) libdir="$2"; shift 2 ;;
    --libdir=*) libdir="${1#*=}"; shift ;;
    --destdir) destdir="$2"; shift 2 ;;
    --destdir=*) destdir="${1#*=}"; shift ;;
    --no-build) build=0; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "install-c.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$prefix" in /*) ;; *) prefix="$(pwd)/$prefix" ;; esac
libdir="${libdir:-$prefix/lib}"
includedir="$prefix/include"

if [ "$build" = 1 ]; then
  cargo build --release -p portmgr-capi
fi
target_dir="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
target_dir="${CARGO_TARGET_DIR:-$target_dir}"
case "$target_dir" in /*) ;; *) target_dir="$(pwd)/$target_dir" ;; esac
rel="$target_dir/release"
version="$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' Cargo.toml | head -1)"
major="${version%%.*}"; rest="${version#*.}"; minor="${rest%%.*}"
if [ "$major" = 0 ]; then abi="0.$minor"; else abi="$major"; fi

for f in "$rel/libportmgr.so" "$rel/libportmgr.a" include/portmgr.h bindings/cpp/portmgr.hpp; do
  [ -f "$f" ] || { echo "install-c.sh: $f is missing (build first)" >&2; exit 1; }
done

# The system libraries a static link needs (rustc --print native-static-libs, Linux).
libs_private="-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc"

install -d "$destdir$libdir/pkgconfig" "$destdir$includedir"
install -m 0755 "$rel/libportmgr.so" "$destdir$libdir/libportmgr.so.$version"
ln -sf "libportmgr.so.$version" "$destdir$libdir/libportmgr.so.$abi"
ln -sf "libportmgr.so.$abi" "$destdir$libdir/libportmgr.so"
install -m 0644 "$rel/libportmgr.a" "$destdir$libdir/libportmgr.a"
install -m 0644 include/portmgr.h "$destdir$includedir/portmgr.h"
install -m 0644 bindings/cpp/portmgr.hpp "$destdir$includedir/portmgr.hpp"
sed -e "s|@PREFIX@|$prefix|" -e "s|@LIBDIR@|$libdir|" -e "s|@INCLUDEDIR@|$includedir|" \
    -e "s|@VERSION@|$version|" -e "s|@LIBS_PRIVATE@|$libs_private|" \
    bindings/c/portmgr.pc.in > "$destdir$libdir/pkgconfig/portmgr.pc"
echo "installed libportmgr $version into $destdir$prefix (pkg-config: $libdir/pkgconfig/portmgr.pc)"
