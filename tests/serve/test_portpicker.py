"""The real `portpicker` package from PyPI, unmodified, talking to `portmgr serve` through
PORTSERVER_ADDRESS (set by run.sh, which starts the server on its own registry with the
pool 64500-64999), from 8 processes at once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import portpicker

PORTMGR = os.environ["PORTMGR_BIN"]
REGISTRY = os.environ["PORTMGR_SERVE_REGISTRY"]

CHILD = textwrap.dedent(
    """
    import sys, portpicker
    ports = [portpicker.pick_unused_port() for _ in range(25)]
    print(" ".join(map(str, ports)), flush=True)
    sys.stdin.readline()
    """
)


def held() -> dict[int, dict]:
    out = subprocess.run([PORTMGR, "--registry", REGISTRY, "list", "--json"], check=True, capture_output=True, text=True)
    return {row["port"]: row for row in json.loads(out.stdout)}


def test_the_server_address_is_set() -> None:
    assert os.environ["PORTSERVER_ADDRESS"].startswith("@")


def test_eight_processes_at_once_get_distinct_ports_freed_when_each_exits() -> None:
    kids = [
        subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(8)
    ]
    got: dict[int, list[int]] = {}
    for k in kids:
        line = k.stdout.readline() if k.stdout else ""
        ports = [int(p) for p in line.split()]
        assert len(ports) == 25 and all(p != 0 for p in ports), line
        got[k.pid] = ports
    every = [p for ports in got.values() for p in ports]
    assert len(set(every)) == len(every) == 200, "duplicates between portpicker clients"
    assert all(64500 <= p <= 64999 for p in every)
    rows = held()
    for pid, ports in got.items():
        for p in ports:
            assert p in rows, f"port {p} of pid {pid} is not in `portmgr list`"
            assert rows[p]["watch_pid"] == pid, rows[p]
    # Half exit by themselves, half are SIGKILLed: every port comes back either way.
    for i, k in enumerate(kids):
        if i % 2:
            k.send_signal(signal.SIGKILL)
        elif k.stdin:
            k.stdin.close()
        k.wait(timeout=30)
        for f in (k.stdin, k.stdout):
            if f:
                f.close()
    rows = held()
    assert not [p for p in every if p in rows], "ports of exited clients are still held"


def test_this_process_gets_a_port_too() -> None:
    port = portpicker.pick_unused_port()
    assert 64500 <= port <= 64999
    assert held()[port]["watch_pid"] == os.getpid()
