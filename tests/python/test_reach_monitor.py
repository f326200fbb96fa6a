"""Issue 18 items 3 and 4 from Python: portmgr.first_reachable (the fallback over
candidate endpoints) and health monitoring with history (portmgr.HealthMonitor,
portmgr.health_history).

Exact ports (inside the pool, used by no other file): 11700-11709 for the fallback,
11720-11729 the range the monitor test fills.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

import portmgr


def syn_dropping_listener(port: int) -> tuple[socket.socket, list[socket.socket]]:
    """A listener whose accept queue is full (listen(0), connections never accepted), so
    new SYNs are dropped."""
    s = socket.socket()
    s.bind(("127.0.0.1", port))
    s.listen(0)
    held = []
    for _ in range(16):
        c = socket.socket()
        c.settimeout(0.3)
        try:
            c.connect(("127.0.0.1", port))
        except (socket.timeout, TimeoutError):
            c.close()
            return s, held
        held.append(c)
    raise AssertionError("the backlog never filled")


def test_the_open_candidate_wins_within_about_the_timeout() -> None:
    full, conns = syn_dropping_listener(11702)
    open_ = socket.create_server(("127.0.0.1", 11703))
    try:
        targets = ["127.0.0.1:11701", "127.0.0.1:11702", "[::1]:11704", "127.0.0.1:11703"]
        t0 = time.monotonic()
        r = portmgr.first_reachable(targets, timeout=1.5)
        took = time.monotonic() - t0
        assert r and r.reachable == "127.0.0.1:11703" and r.winner == 3
        assert [c.outcome for c in r.candidates] == ["refused", "timed_out", "refused", "reachable"]
        assert r.candidate is not None and r.candidate.address == "127.0.0.1:11703"
        assert r.candidates[2].host == "::1" and r.candidates[2].port == 11704
        assert r.candidates[1].elapsed >= 1.4 and r.candidates[0].elapsed < 0.5
        # About the timeout, not the sum of the timeouts (4 x 1.5 s).
        assert 1.4 <= took < 3.0, took

        r = portmgr.first_reachable(["127.0.0.1:11701", "no-such-host.invalid:11705"], timeout=0.5)
        assert not r and r.reachable is None and r.winner is None and r.candidate is None
        assert [c.outcome for c in r.candidates] == ["refused", "unresolvable"]
        assert all(c.error for c in r.candidates)
    finally:
        open_.close()
        for c in conns:
            c.close()
        full.close()


@pytest.mark.parametrize("targets", [[], ["::1:80"], ["host:0"], ["x"]])
def test_bad_candidates_are_invalid_arguments(targets: list[str]) -> None:
    with pytest.raises(portmgr.InvalidArgument):
        portmgr.first_reachable(targets, timeout=0.5)


def test_a_zero_timeout_is_an_invalid_argument() -> None:
    with pytest.raises(portmgr.InvalidArgument):
        portmgr.first_reachable(["127.0.0.1:11701"], timeout=0)


def wait_for(what: str, f, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        v = f()
        if v:
            return v
        assert time.monotonic() < deadline, f"{what} never happened"
        time.sleep(0.02)


def test_a_monitor_at_100ms_records_a_range_filling_up() -> None:
    seen: list[portmgr.HealthEntry] = []
    lock = threading.Lock()

    def cb(e: portmgr.HealthEntry) -> None:
        with lock:
            seen.append(e)

    def exhausted(e: portmgr.HealthEntry) -> bool:
        return not e.ok and any(p.kind == "exhausted" and p.range == (11720, 11729) for p in e.problems)

    with portmgr.HealthMonitor(0.1, cb) as m:
        assert m.running and m.interval == 0.1
        wait_for("a healthy check", lambda: any(e.ok for e in portmgr.health_history()))
        leases = [portmgr.allocate(range=(11720, 11729)) for _ in range(10)]
        hist = wait_for("the exhausted range in the history", lambda: [e for e in portmgr.health_history() if exhausted(e)])
        assert hist[0].changed and hist[0].problem_count == 1 and hist[0].held == 10
        assert "11720-11729" in hist[0].problems[0].message
        for lease in leases:
            lease.release()
        wait_for("the recovery", lambda: (lambda h: h and h[-1].ok and any(exhausted(e) for e in h))(portmgr.health_history()))
        time.sleep(0.15)
    assert not m.running
    n = m.checks
    assert n >= 3
    time.sleep(0.3)
    assert m.checks == n, "a check ran after stop"
    with lock:
        assert len(seen) == n
        changes = [e.ok for e in seen if e.changed]
    assert changes[:3] == [True, False, True], changes
    h = portmgr.health_history()
    assert [e.seq for e in h] == sorted({e.seq for e in h})
    assert all(isinstance(e.time, float) and abs(e.time - e.time_ms / 1000) < 1e-3 for e in h)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_failing_callback_does_not_stop_the_monitor() -> None:
    calls = []

    def cb(e: portmgr.HealthEntry) -> None:
        calls.append(e)
        raise RuntimeError("boom")

    m = portmgr.HealthMonitor(0.05, cb)
    try:
        wait_for("three checks", lambda: len(calls) >= 3)
        assert m.running
    finally:
        m.stop()
        m.stop()  # twice is harmless
    assert not m.running


def test_monitor_arguments_are_checked() -> None:
    with pytest.raises(portmgr.InvalidArgument):
        portmgr.HealthMonitor(0)
    with pytest.raises(portmgr.InvalidArgument):
        portmgr.HealthMonitor(0.1, threshold=2.0)
    with pytest.raises(TypeError):
        portmgr.HealthMonitor(0.1, 42)  # type: ignore[arg-type]


def test_an_empty_history_and_a_monitor_left_running_at_exit() -> None:
    assert portmgr.health_history() == []
    from conftest import run_python

    # A monitor never stopped: the interpreter still exits cleanly (stopped at exit).
    r = run_python(
        """
        import portmgr, time
        m = portmgr.HealthMonitor(0.05, lambda e: None)
        time.sleep(0.2)
        print("checks", m.checks)
        """
    )
    assert r.returncode == 0, r.stderr
    assert int(r.stdout.split()[1]) >= 2
    assert len(portmgr.health_history()) >= 2
