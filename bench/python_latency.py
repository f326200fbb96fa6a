#!/usr/bin/env python3
"""Latency of getting a port from Python: portmgr against bind(0) and portpicker.

One run, interleaved: each round times a batch of every operation in turn, so drift
(CPU frequency, other load) hits every row alike. Rows:

  bind(0) baseline          socket(); bind(("", 0)); getsockname(); close()
                            (the kernel's own "give me a port": no registry, and the
                            port is free for anyone once closed)
  portmgr.allocate()+release()
  portmgr.free_port()       (the release after it is done outside the timing)
  portmgr.free_port()+release(port)
  portmgr.bound_socket()    (+ close and release, untimed)
  portpicker.pick_unused_port()   the peer, when installed (pip install portpicker);
                            return_port() after each batch, untimed

Target (issue #4): median of allocate()+release() <= 2x the bind(0) median.

Usage: python bench/python_latency.py [--rounds 200] [--batch 50] [--json FILE]
Run it with the venv tests/python/run.sh makes (portmgr installed there), plus
`pip install portpicker` for the peer row. It uses a fresh temporary registry.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
from typing import Callable, Optional

os.environ.setdefault("PORTMGR_DIR", os.path.join(tempfile.mkdtemp(prefix="portmgr-bench-"), "registry"))

import portmgr  # noqa: E402

try:
    import portpicker  # type: ignore[import-untyped]
except ImportError:  # the row is reported as missing
    portpicker = None


def bind0() -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("", 0))
    s.getsockname()
    s.close()


def allocate_release() -> None:
    portmgr.allocate().release()


_pending: list[int] = []


def free_port_only() -> None:
    _pending.append(portmgr.free_port())


def after_free_port_only() -> None:
    for p in _pending:
        portmgr.release(p)
    _pending.clear()


def free_port_release() -> None:
    portmgr.release(portmgr.free_port())


_socks: list[socket.socket] = []


def bound_socket_only() -> None:
    _socks.append(portmgr.bound_socket())


def after_bound_socket() -> None:
    for s in _socks:
        port = s.getsockname()[1]
        s.close()
        portmgr.release(port)
    _socks.clear()


_picked: list[int] = []


def pick_unused_port() -> None:
    assert portpicker is not None
    _picked.append(portpicker.pick_unused_port())


def after_pick() -> None:
    # portpicker never hands a port out twice per process: give them back (untimed), or
    # it runs dry after some thousand picks.
    assert portpicker is not None
    for p in _picked:
        portpicker.return_port(p)
    _picked.clear()


Row = tuple[str, Callable[[], None], Optional[Callable[[], None]]]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()

    rows: list[Row] = [
        ("bind(0) baseline", bind0, None),
        ("portmgr.allocate()+release()", allocate_release, None),
        ("portmgr.free_port()", free_port_only, after_free_port_only),
        ("portmgr.free_port()+release()", free_port_release, None),
        ("portmgr.bound_socket()", bound_socket_only, after_bound_socket),
    ]
    if portpicker is not None:
        rows.append(("portpicker.pick_unused_port()", pick_unused_port, after_pick))

    # Warm up: open the registry, fault in the mapping, import everything.
    for _, op, after in rows:
        for _ in range(200):
            op()
        if after:
            after()

    samples: dict[str, list[int]] = {name: [] for name, _, _ in rows}
    clock = time.perf_counter_ns
    for _ in range(args.rounds):
        for name, op, after in rows:
            out = samples[name]
            for _ in range(args.batch):
                t0 = clock()
                op()
                out.append(clock() - t0)
            if after:
                after()

    def pct(xs: list[int], q: float) -> float:
        xs = sorted(xs)
        return xs[min(len(xs) - 1, int(q * len(xs)))] / 1000.0

    base = statistics.median(samples["bind(0) baseline"]) / 1000.0
    result = []
    for name, _, _ in rows:
        xs = samples[name]
        med = statistics.median(xs) / 1000.0
        result.append({"op": name, "n": len(xs), "median_us": med, "p99_us": pct(xs, 0.99), "ratio": med / base})

    print(f"portmgr {portmgr.__version__}, Python {platform.python_version()}, {platform.machine()}, "
          f"{os.cpu_count()} CPUs; {args.rounds} rounds x {args.batch} per op, interleaved")
    print(f"registry {portmgr.registry().path}, pool {portmgr.registry().default_pool}")
    print()
    print(f"| {'operation':<32} | {'median µs':>9} | {'p99 µs':>9} | {'x bind(0)':>9} |")
    print(f"| {'-' * 32} | {'-' * 9}:| {'-' * 9}:| {'-' * 9}:|")
    for r in result:
        print(f"| {r['op']:<32} | {r['median_us']:>9.1f} | {r['p99_us']:>9.1f} | {r['ratio']:>9.2f} |")
    if portpicker is None:
        print(f"| {'portpicker.pick_unused_port()':<32} | {'not installed (pip install portpicker)':>35} |")
    target = next(r for r in result if r["op"] == "portmgr.allocate()+release()")["ratio"]
    print()
    print(f"target: allocate()+release() median <= 2x bind(0): {target:.2f}x -> {'met' if target <= 2 else 'NOT met'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"python": platform.python_version(), "rows": result}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
