"""fork, spawn and threads: a child never releases its parent's ports and gets its own;
threads never share a port; the GIL is released while the library waits."""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
import sys
import threading
import time
from typing import Any

import pytest

import portmgr
from conftest import spawn_python, stop


def held(port: int) -> bool:
    return portmgr.get_by_port(port) is not None


# Run in the child (module level, so spawn and forkserver can import them).
def child_work(parent_ports: list[int], parent_lease: Any, q: Any) -> None:
    try:
        mine = portmgr.allocate(count=5)
        one = portmgr.free_port()
        result: dict[str, Any] = {"mine": mine.ports + [one], "pid": os.getpid()}
        if parent_lease is not None:
            # Inherited by fork: the parent's. Releasing it here must do nothing.
            parent_lease.release()
            result["parent_held_after_child_release"] = all(held(p) for p in parent_ports)
        try:
            portmgr.release(parent_ports[0])
            result["release_parent_port"] = "released!"
        except portmgr.NotOwner:
            result["release_parent_port"] = "NotOwner"
        result["parent_ports_held"] = all(held(p) for p in parent_ports)
        result["mine_held"] = all(held(p) for p in result["mine"])
        q.put(result)
    except BaseException as e:  # report, do not hang the parent
        q.put({"error": repr(e)})


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_multiprocessing_child_has_its_own_ports(method: str) -> None:
    ctx = mp.get_context(method)
    with portmgr.allocate(count=5) as lease:
        q = ctx.Queue()
        inherited = lease if method == "fork" else None
        p = ctx.Process(target=child_work, args=(lease.ports, inherited, q))
        p.start()
        result = q.get(timeout=60)
        p.join(timeout=60)
        assert p.exitcode == 0
        assert "error" not in result, result
        assert result["pid"] != os.getpid()
        assert not set(result["mine"]) & set(lease.ports)
        assert result["mine_held"] and result["parent_ports_held"]
        assert result["release_parent_port"] == "NotOwner"
        if method == "fork":
            assert result["parent_held_after_child_release"]
        # The child exited: its ports are free; the parent's are still held.
        assert all(held(p) for p in lease.ports)
        assert not any(held(p) for p in result["mine"])
        # The parent can still allocate and release.
        with portmgr.allocate() as again:
            assert held(again.port)
    assert not any(held(p) for p in lease.ports)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_raw_fork_child_exits_without_touching_parent_ports() -> None:
    lease = portmgr.allocate(count=3)
    free = portmgr.free_port()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            os.close(r)
            lease.release()  # the parent's: nothing happens
            child = portmgr.allocate()
            ok = child.port not in lease.ports and child.port != free and all(held(p) for p in lease.ports)
            os.write(w, f"{int(ok)} {child.port}".encode())
            code = 0
        finally:
            os._exit(code)  # no cleanup; the kernel drops the child's owner lock
    os.close(w)
    with os.fdopen(r) as f:
        ok_s, child_port = f.read().split()
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0 and ok_s == "1"
    assert all(held(p) for p in lease.ports) and held(free)
    assert not held(int(child_port))
    lease.release()
    portmgr.release(free)


def test_threads_never_share_a_port() -> None:
    per_thread, threads = 60, 8
    results: list[list[portmgr.Lease]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def work(i: int) -> None:
        try:
            start.wait()
            for _ in range(per_thread):
                results[i].append(portmgr.allocate())
        except BaseException as e:
            errors.append(e)

    ts = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors
    ports = [lease.port for r in results for lease in r]
    assert len(ports) == len(set(ports)) == per_thread * threads
    assert {i.port for i in portmgr.leases()} == set(ports)
    # Release from other threads than the ones that allocated.
    leases = [lease for r in results for lease in r]
    rel = [threading.Thread(target=lambda part=leases[i::4]: [x.release() for x in part]) for i in range(4)]
    for t in rel:
        t.start()
    for t in rel:
        t.join()
    assert portmgr.leases() == []


def count_while(busy: threading.Thread) -> int:
    n = 0
    while busy.is_alive():
        n += 1
        time.sleep(0)  # a pure-Python loop that needs the GIL
    return n


def test_gil_is_released_during_waits() -> None:
    # Nothing listens on this port: wait_listening polls for the whole timeout.
    port = portmgr.free_port()
    t = threading.Thread(target=lambda: pytest.raises(portmgr.PortTimeout, portmgr.wait_listening, port, timeout=0.5))
    t0 = time.monotonic()
    t.start()
    n = count_while(t)
    assert time.monotonic() - t0 >= 0.45
    assert n > 1000, f"the main thread ran only {n} iterations while another thread waited"


def test_gil_is_released_while_waiting_for_the_registry_lock(registry_dir: Any) -> None:
    reg = portmgr.Registry(registry_dir, lock_timeout=0.5)
    child = spawn_python(
        """
        import fcntl, os, sys
        f = open(os.path.join(os.environ["PORTMGR_DIR"], "registry.lock"), "r+")
        fcntl.flock(f, fcntl.LOCK_EX)
        print("locked", flush=True)
        sys.stdin.read()
        """
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().strip() == "locked"
        blocked = threading.Thread(target=lambda: pytest.raises(portmgr.LockTimeout, reg.allocate))
        # Baseline: the same loop with an idle sleeper thread.
        idle = threading.Thread(target=time.sleep, args=(0.5,))
        idle.start()
        free_rate = count_while(idle)
        blocked.start()
        blocked_rate = count_while(blocked)
        # Held GIL would give ~0; a released one about the idle rate (slack for noisy CI).
        assert blocked_rate >= 0.25 * free_rate, (blocked_rate, free_rate)
    finally:
        if child.stdin:
            child.stdin.close()
        stop(child)


def test_sockets_survive_threads() -> None:
    socks: list[socket.socket] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(10):
            s = portmgr.bound_socket()
            with lock:
                socks.append(s)

    ts = [threading.Thread(target=work) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    ports = [s.getsockname()[1] for s in socks]
    assert len(set(ports)) == 40
    for s in socks:
        s.close()
    for p in ports:
        portmgr.release(p)


def test_default_registry_after_fork_in_a_threaded_parent() -> None:
    # Another thread holds the package's default-registry lock while we fork: the child
    # must still be able to use the default registry (register_at_fork resets it).
    if sys.version_info >= (3, 12):
        pytest.skip("fork with threads warns on 3.12+; covered by multiprocessing tests")
    portmgr.registry()
    gate = threading.Event()
    done = threading.Event()

    def hold() -> None:
        with portmgr._lock:
            gate.set()
            done.wait(5)

    t = threading.Thread(target=hold)
    t.start()
    gate.wait(5)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.environ["PORTMGR_DIR"] = os.environ["PORTMGR_DIR"] + "-child"  # forces a reopen under _lock
            lease = portmgr.allocate()
            code = 0 if lease.port else 1
        finally:
            os._exit(code)
    done.set()
    t.join()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        wpid, status = os.waitpid(pid, os.WNOHANG)
        if wpid:
            break
        time.sleep(0.01)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung on a lock copied from the parent")
    assert os.WEXITSTATUS(status) == 0


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # 3.12+: fork with threads
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_while_other_threads_are_inside_the_library() -> None:
    # Threads allocate and release non-stop; the main thread forks 40 times. Every child
    # must be able to allocate and release at once (no lock copied in a held state).
    stop = threading.Event()
    errors: list[BaseException] = []

    def churn() -> None:
        try:
            while not stop.is_set():
                portmgr.allocate().release()
                portmgr.release(portmgr.free_port())
        except BaseException as e:
            errors.append(e)

    workers = [threading.Thread(target=churn) for _ in range(3)]
    for t in workers:
        t.start()
    try:
        for _ in range(40):
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    with portmgr.allocate() as lease:
                        code = 0 if held(lease.port) else 2
                finally:
                    os._exit(code)
            deadline = time.monotonic() + 10
            while True:
                wpid, status = os.waitpid(pid, os.WNOHANG)
                if wpid:
                    break
                if time.monotonic() > deadline:
                    os.kill(pid, 9)
                    os.waitpid(pid, 0)
                    pytest.fail("a child forked while threads used the library hung")
                time.sleep(0.002)
            assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    finally:
        stop.set()
        for t in workers:
            t.join()
    assert not errors
