"""Stress: every pytest-xdist worker allocates 200 ports from one shared registry and
holds them; no port may be handed out twice.

run.sh runs this file with ``pytest -n 4 --dist each`` (the test runs once on every
worker, at the same time); without xdist it runs once. Checked two ways, while every
worker still holds its ports: the union of what the workers were handed has no
duplicate and every port shows in the registry as held by its worker; and every
worker binds every port it was handed (a duplicate would fail with EADDRINUSE).
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest

import portmgr

PER_WORKER = 200
STRESS_RANGE = (10300, 11999)


@pytest.fixture
def shared_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory every worker of this run sees: the run's base temp dir under xdist
    (workers get basetemp/popen-gwN), else this process's."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    d = base / "stress"
    d.mkdir(exist_ok=True)
    return d


def wait_for(d: Path, pattern: str, n: int, timeout: float = 120) -> list[Path]:
    deadline = time.monotonic() + timeout
    while True:
        found = sorted(d.glob(pattern))
        if len(found) >= n:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"only {len(found)} of {n} workers reached {pattern!r} within {timeout}s")
        time.sleep(0.02)


def test_no_port_handed_out_twice(shared_dir: Path) -> None:
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    me = os.environ.get("PYTEST_XDIST_WORKER", "solo")
    reg = portmgr.Registry(shared_dir / "registry", lock_timeout=30)

    wait_for_start = shared_dir / f"ready-{me}"
    wait_for_start.touch()
    wait_for(shared_dir, "ready-*", workers)  # start together: maximum contention

    leases = [reg.allocate(range=STRESS_RANGE) for _ in range(PER_WORKER)]
    socks: list[socket.socket] = []
    try:
        ports = [lease.port for lease in leases]
        assert len(set(ports)) == PER_WORKER
        # Bind every port, on the wildcard, without SO_REUSEADDR: a port another worker
        # also holds (and binds) fails here or there.
        for p in ports:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("0.0.0.0", p))
            socks.append(s)
        # Written aside and renamed: another worker must never read it half-written.
        tmp = shared_dir / f".ports-{me}.tmp"
        tmp.write_text(json.dumps({"pid": os.getpid(), "ports": ports}))
        tmp.rename(shared_dir / f"ports-{me}.json")

        files = wait_for(shared_dir, "ports-*.json", workers)
        everyone = [json.loads(f.read_text()) for f in files]
        all_ports = [p for w in everyone for p in w["ports"]]
        dupes = sorted({p for p in all_ports if all_ports.count(p) > 1})
        assert not dupes, f"handed out twice: {dupes}"
        assert len(all_ports) == workers * PER_WORKER

        # The registry agrees: every port held, by the worker that was handed it.
        rows = {i.port: i for i in reg.list()}
        for w in everyone:
            for p in w["ports"]:
                assert p in rows and rows[p].owner_pid == w["pid"] and rows[p].state == "held", p
        assert reg.stats().held >= workers * PER_WORKER
    finally:
        (shared_dir / f"checked-{me}").touch()
        wait_for(shared_dir, "checked-*", workers)  # nobody releases while another checks
        for s in socks:
            s.close()
        for lease in leases:
            lease.release()
    assert [i.port for i in reg.list() if i.owner_pid == os.getpid()] == []
