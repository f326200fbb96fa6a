"""The public API as the issue writes it, and the rest of the surface."""

from __future__ import annotations

import gc
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import portmgr
from conftest import RANGE, run_python


def in_range(port: int) -> bool:
    return RANGE[0] <= port <= RANGE[1]


def held(port: int) -> bool:
    return portmgr.get_by_port(port) is not None


def bind_tcp(port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", port))
    return s


def test_contract_as_written() -> None:
    lease = portmgr.allocate()
    assert isinstance(lease.port, int) and in_range(lease.port)
    assert lease.ports == [lease.port]
    assert held(lease.port)
    lease.release()
    assert not held(lease.port)
    lease.release()  # idempotent
    assert lease.released

    with portmgr.allocate(name="db", proto="udp") as lease:
        info = portmgr.get_by_name("db")
        assert [i.port for i in info] == [lease.port]
        assert info[0].protocols == "udp" and info[0].name == "db"
    assert portmgr.get_by_name("db") == []
    assert lease.released

    port = portmgr.free_port()
    assert isinstance(port, int) and held(port)
    assert portmgr.release(port) == [port]
    assert not held(port)

    sock = portmgr.bound_socket(proto="tcp")
    assert isinstance(sock, socket.socket)
    with sock:
        p = sock.getsockname()[1]
        assert held(p) and portmgr.get_by_port(p).bound  # type: ignore[union-attr]
        assert portmgr.is_free(p, proto="tcp") is False
    portmgr.release(p)

    assert issubclass(portmgr.PortsExhausted, portmgr.PortError)


def test_lease_is_not_released_by_garbage_collection() -> None:
    port = portmgr.allocate().port
    gc.collect()
    assert held(port)
    lease = portmgr.allocate()
    p2 = lease.port
    del lease
    gc.collect()
    assert held(p2)
    # ... and release(port) still frees them.
    assert portmgr.release(port) == [port]
    assert portmgr.release(p2) == [p2]
    assert not held(port) and not held(p2)


def test_leases_die_with_the_process() -> None:
    out = run_python(
        """
        import portmgr
        print(portmgr.allocate().port, portmgr.free_port(), flush=True)
        """
    )
    assert out.returncode == 0, out.stderr
    a, b = map(int, out.stdout.split())
    assert not held(a) and not held(b)


def test_context_manager_releases_on_exception() -> None:
    with pytest.raises(RuntimeError):
        with portmgr.allocate() as lease:
            assert held(lease.port)
            raise RuntimeError("boom")
    assert not held(lease.port)


def test_several_ports_and_contiguous_blocks() -> None:
    with portmgr.allocate(count=5) as lease:
        assert len(set(lease.ports)) == 5 and lease.port == lease.ports[0]
        assert all(held(p) for p in lease.ports)
    with portmgr.allocate(count=8, contiguous=True) as lease:
        assert lease.ports == list(range(lease.port, lease.port + 8))
    assert not any(held(p) for p in lease.ports)


@pytest.mark.parametrize("given", [(10500, 10509), "10500-10509", range(10500, 10510)])
def test_range_forms(given: object) -> None:
    with portmgr.allocate(range=given, count=10) as lease:  # type: ignore[arg-type]
        assert sorted(lease.ports) == list(range(10500, 10510))


def test_strategies() -> None:
    with portmgr.allocate(range=(11000, 11099), strategy="sequential") as a:
        with portmgr.allocate(range=(11000, 11099), strategy="sequential") as b:
            assert (a.port, b.port) == (11000, 11001)
    with portmgr.allocate(name="web", strategy="hash") as h1:
        first = h1.port
    with portmgr.allocate(name="web", strategy="hash") as h2:
        assert h2.port == first  # same name, same port while it is free
    with portmgr.allocate(strategy="hash", key="web") as h3:
        assert h3.port == first  # the key is the name by default
    with portmgr.allocate(strategy="kernel") as k:
        assert held(k.port)
    with pytest.raises(portmgr.InvalidArgument):
        portmgr.allocate(strategy="fastest")  # type: ignore[arg-type]


def test_preferred_port() -> None:
    with portmgr.allocate(preferred=11500) as a:
        assert a.port == 11500
        with portmgr.allocate(preferred=11500) as b:
            assert b.port != 11500  # falls back to the strategy
        with pytest.raises(portmgr.PortInUse) as e:
            portmgr.allocate(preferred=11500, required=True)
        assert e.value.port == 11500


def test_ttl_renew_keep_and_watch_pid() -> None:
    lease = portmgr.allocate(ttl=1)  # the shortest TTL there is (issue 11.10)
    info = portmgr.get_by_port(lease.port)
    assert info is not None and info.expires_ms is not None and info.detached
    time.sleep(1.3)
    assert not held(lease.port)  # expired
    lease.release()

    lease = portmgr.allocate()
    lease.renew(60)
    assert portmgr.get_by_port(lease.port).expires_ms is not None  # type: ignore[union-attr]
    portmgr.renew(lease.port, 120)
    lease.release()

    kept = portmgr.allocate()
    assert kept.keep() == kept.ports and kept.released
    assert held(kept.port) and portmgr.get_by_port(kept.port).detached  # type: ignore[union-attr]
    assert portmgr.release(kept.port) == [kept.port]

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        lease = portmgr.allocate(watch_pid=child.pid)
        assert portmgr.get_by_port(lease.port).watch_pid == child.pid  # type: ignore[union-attr]
    finally:
        child.kill()
        child.wait()
    assert not held(lease.port)


def test_bound_sockets_tcp_and_udp() -> None:
    with portmgr.bound_socket(proto="tcp") as srv:
        port = srv.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
            conn, _ = srv.accept()
            c.sendall(b"hi")
            assert conn.recv(2) == b"hi"
            conn.close()
        portmgr.wait_listening(port, timeout=1)
    portmgr.release(port)

    with portmgr.bound_socket(proto="udp") as u:
        port = u.getsockname()[1]
        assert u.type == socket.SOCK_DGRAM
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.sendto(b"x", ("127.0.0.1", port))
            assert u.recv(1) == b"x"
    portmgr.release(port)

    lease, socks = portmgr.allocate_bound(proto="both", count=2)
    try:
        assert len(socks) == 4
        kinds = sorted((s.getsockname()[1], s.type) for s in socks)
        assert {p for p, _ in kinds} == set(lease.ports)
    finally:
        for s in socks:
            s.close()
        lease.release()
    with pytest.raises(portmgr.InvalidArgument):
        portmgr.bound_socket(proto="both")  # type: ignore[arg-type]


def test_allocated_port_can_be_bound_by_its_user() -> None:
    with portmgr.allocate() as lease:
        with bind_tcp(lease.port):
            pass


def test_ports_bound_outside_portmgr_are_skipped() -> None:
    with bind_tcp(11950):
        with portmgr.allocate(range=(11950, 11951), strategy="sequential") as lease:
            assert lease.port == 11951
        with pytest.raises(portmgr.PortInUse) as e:
            portmgr.allocate(preferred=11950, required=True)
        assert e.value.port == 11950
        with pytest.raises(portmgr.PortsExhausted):
            portmgr.allocate(range=(11950, 11950))


def test_registry_views() -> None:
    reg = portmgr.registry()
    assert isinstance(reg, portmgr.Registry)
    assert reg is portmgr.registry()  # cached
    assert Path(reg.path) == Path(portmgr.default_dir())
    with portmgr.allocate(name="api", count=2) as lease:
        rows = portmgr.leases()
        assert sorted(r.port for r in rows) == sorted(lease.ports)
        assert {r.lease_id for r in rows} == {lease.id}
        assert all(r.owner_pid == __import__("os").getpid() and r.state == "held" for r in rows)
        assert [r.port for r in portmgr.get_by_name("api")] == sorted(lease.ports)
        st = portmgr.stats()
        assert st.pool == f"{RANGE[0]}-{RANGE[1]}" and st.pool_size == RANGE[1] - RANGE[0] + 1
        assert st.held == 2 and st.free == st.pool_size - 2 and st.owners >= 1
        assert st.allocations >= 2
        assert "LeaseInfo(port=" in repr(rows[0]) and "name='api'" in repr(rows[0]).replace('"', "'")
    assert portmgr.gc() == []
    assert portmgr.get_by_port(lease.port) is None
    assert reg.default_pool == RANGE
    assert portmgr.default_pool() == RANGE


def test_gc_reports_dead_owners(tmp_path: Path) -> None:
    out = run_python(
        """
        import os, portmgr
        lease = portmgr.allocate(count=3)
        print(" ".join(map(str, lease.ports)), flush=True)
        os._exit(0)   # no cleanup at all: the kernel drops the owner lock
        """
    )
    assert out.returncode == 0, out.stderr
    ports = sorted(map(int, out.stdout.split()))
    freed = portmgr.gc()
    assert sorted(i.port for i in freed) in ([], ports)  # already reclaimed, or reclaimed now
    assert not any(held(p) for p in ports)


def test_explicit_registry_and_env_change(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = portmgr.Registry(tmp_path / "other", lock_timeout=5)
    with other.allocate() as lease:
        assert other.get_by_port(lease.port) is not None
        assert portmgr.get_by_port(lease.port) is None  # a different registry
    assert "portmgr.Registry(" in repr(other)
    first = portmgr.registry()
    monkeypatch.setenv("PORTMGR_DIR", str(tmp_path / "third"))
    assert portmgr.registry() is not first
    assert Path(portmgr.registry().path) == tmp_path / "third"
    other.set_lock_timeout(1.5)
    assert other.notices() == []
    port = other.free_port()
    assert other.release(port) == [port]
    with other.allocate(name="n1", ttl=60) as l2:
        other.renew_name("n1", 30)
        assert other.release_name("n1") == l2.ports


def test_reservation() -> None:
    with portmgr.Reservation((10600, 10609), strategy="sequential") as r:
        assert r.range == (10600, 10609)
        a = r.reserve_port()
        assert a == 10600 and a in r and r.is_reserved(a)
        more = r.reserve_ports(20)
        assert len(more) == 9 and len(r) == 10
        with pytest.raises(portmgr.PortsExhausted):
            r.reserve_port()
        assert r.release_port(a) and not r.release_port(a)
        assert r.release_ports(more[:3]) == 3
    assert len(r) == 0
    assert "Reservation" in repr(r)
    assert len(portmgr.Reservation()) == 0  # the default pool


def test_probes() -> None:
    with bind_tcp(0) as s:
        s.listen()
        port = s.getsockname()[1]
        assert not portmgr.is_free(port)
        assert not portmgr.is_free(port, "tcp", host="127.0.0.1")
        portmgr.wait_listening(port, timeout=2)
        assert portmgr.reachable([("127.0.0.1", port), ("localhost", port)]) == [True, True]
        with pytest.raises(portmgr.PortTimeout):
            portmgr.wait_free(port, timeout=0.05)
    portmgr.wait_free(port, timeout=2)
    assert portmgr.reachable([("127.0.0.1", port)], timeout=0.2) == [False]
    with pytest.raises(portmgr.PortTimeout):
        portmgr.wait_listening(port, timeout=0.05)

    with bind_tcp(11900) as s:
        assert portmgr.scan((11890, 11910)) == [11900]
        assert portmgr.scan("11890-11910", "udp") == []
    assert portmgr.is_free(11900, "both")


def test_argument_errors_are_value_or_type_errors() -> None:
    for bad in [dict(count=0), dict(proto="sctp"), dict(range=(5, 1)), dict(range="nope"), dict(range=(0, 10)),
                dict(preferred=70000), dict(required=True), dict(ttl=0), dict(ttl=-1.0), dict(watch_pid=-3),
                dict(strategy="kernel", count=2), dict(name=""), dict(name="x" * 100), dict(key="k")]:
        with pytest.raises(portmgr.InvalidArgument) as e:
            portmgr.allocate(**bad)  # type: ignore[arg-type]
        assert isinstance(e.value, ValueError) and e.value.code == 1, bad
    with pytest.raises(TypeError):
        portmgr.allocate(proto=6)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        portmgr.allocate(range=[1, 2, 3])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        portmgr.allocate(1)  # type: ignore[misc]
    with pytest.raises(portmgr.InvalidArgument):
        portmgr.is_free(0)
    with pytest.raises(portmgr.InvalidArgument):
        portmgr.wait_listening(80, timeout=float("nan"))


def test_version_and_all() -> None:
    assert portmgr.__version__.count(".") == 2
    for name in portmgr.__all__:
        assert hasattr(portmgr, name), name


def test_module_and_console_script_run_the_rust_cli() -> None:
    script = str(Path(sys.executable).with_name("portmgr"))
    for argv in ([sys.executable, "-m", "portmgr", "--help"], [script, "--help"]):
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert "Usage: portmgr" in out.stdout and "alloc" in out.stdout
    # Real commands through the same Rust code, against this test's registry.
    alloc = subprocess.run([sys.executable, "-m", "portmgr", "alloc", "--ttl", "60s", "--name", "cli"],
                           capture_output=True, text=True, timeout=60)
    assert alloc.returncode == 0, alloc.stderr
    port = int(alloc.stdout)
    info = portmgr.get_by_port(port)
    assert info is not None and info.name == "cli" and info.detached
    listed = subprocess.run([script, "list", "--json"], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and [r["port"] for r in __import__("json").loads(listed.stdout)] == [port]
    rel = subprocess.run([script, "release", str(port)], capture_output=True, text=True, timeout=60)
    assert rel.returncode == 0 and not held(port)
    # Errors exit with the documented status, not a Python traceback.
    bad = subprocess.run([script, "release", str(port)], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 5 and "Traceback" not in bad.stderr
    usage = subprocess.run([sys.executable, "-m", "portmgr", "--no-such-flag"], capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2
    # In-process: the same entry point, returning the status.
    assert portmgr._cli(["stats"]) == 0


def test_get_or_allocate() -> None:
    first = portmgr.get_or_allocate("svc", ttl=60)
    assert isinstance(first, portmgr.Lease)
    again = portmgr.get_or_allocate("svc")
    assert isinstance(again, list) and [i.port for i in again] == first.ports
    portmgr.renew_name("svc", 30)
    first.release()
    assert isinstance(portmgr.get_or_allocate("svc"), portmgr.Lease)
