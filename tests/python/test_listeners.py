"""Issue 18 through Python: listener sets (portmgr.bound_sockets) and Unix-socket paths
(unix_socket_path, bound_unix_socket, the pytest fixtures). Ports 10270-10299."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

import portmgr
from test_plugin import quiet_asyncio  # noqa: F401  (fixture)


def has_v6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_one_port_on_both_loopbacks() -> None:
    addrs = ["127.0.0.1", "::1"] if has_v6() else ["127.0.0.1"]
    lease, socks = portmgr.bound_sockets(addresses=addrs, range=(10270, 10279))
    try:
        assert len(socks) == len(addrs)
        assert {s.getsockname()[1] for s in socks} == {lease.port}
        assert portmgr.get_by_port(lease.port).bound  # type: ignore[union-attr]
        for s, host in zip(socks, addrs):
            assert not s.get_inheritable()
            with socket.create_connection((host, lease.port)) as c:
                conn, _ = s.accept()
                conn.sendall(b"hi")
                assert c.recv(2) == b"hi"
                conn.close()
    finally:
        for s in socks:
            s.close()
        lease.release()


def test_workers_and_both_protocols() -> None:
    lease, socks = portmgr.bound_sockets(addresses=["127.0.0.1"], reuse_port=True, workers=3, proto="both", range=(10280, 10289))
    try:
        kinds = [s.type for s in socks]
        assert kinds.count(socket.SOCK_STREAM) == 3 and kinds.count(socket.SOCK_DGRAM) == 3
        udp = next(s for s in socks if s.type == socket.SOCK_DGRAM)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.sendto(b"x", ("127.0.0.1", lease.port))
        assert any(s.type == socket.SOCK_DGRAM for s in socks) and udp.getsockname()[1] == lease.port
    finally:
        for s in socks:
            s.close()
        lease.release()
    with pytest.raises(portmgr.InvalidArgument, match="reuse_port"):
        portmgr.bound_sockets(workers=2)
    with pytest.raises(portmgr.InvalidArgument):
        portmgr.bound_sockets(addresses=["not-an-address"])
    with pytest.raises(TypeError):
        portmgr.bound_sockets(host="127.0.0.1")


def test_unix_socket_paths() -> None:
    with portmgr.unix_socket_path("db") as p:
        path = p.path
        assert os.fspath(p) == path and os.path.basename(path).startswith("db-")
        assert os.stat(os.path.dirname(path)).st_mode & 0o777 == 0o700
        s = socket.socket(socket.AF_UNIX)
        s.bind(path)
        s.close()
        assert os.path.exists(path)
    assert not os.path.exists(path) and p.released
    p.release()
    path2, srv = portmgr.bound_unix_socket("api")
    with path2, srv:
        c = socket.socket(socket.AF_UNIX)
        c.connect(path2.path)
        conn, _ = srv.accept()
        conn.sendall(b"ok")
        assert c.recv(2) == b"ok"
        conn.close()
        c.close()
    assert not os.path.exists(path2.path)
    with pytest.raises(portmgr.InvalidArgument):
        portmgr.unix_socket_path("bad\nname")


def test_a_dead_holders_path_is_cleaned() -> None:
    code = "import portmgr, os, sys\np = portmgr.unix_socket_path('kid').keep()\nprint(p, flush=True)\nos._exit(0)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    path = out.stdout.strip()
    open(path, "w").close()  # as if its server had bound it
    assert os.path.exists(path)
    with portmgr.unix_socket_path():
        assert not os.path.exists(path), "a dead holder's path was not cleaned"


def test_unix_fixtures(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
import os, socket
def test_path(portmgr_unix_path):
    s = socket.socket(socket.AF_UNIX); s.bind(portmgr_unix_path); s.close()
    assert os.path.exists(portmgr_unix_path)
    with open(os.environ["PORTMGR_TEST_RECORD"], "w") as f:
        f.write(portmgr_unix_path)

def test_socket(portmgr_unix_socket):
    c = socket.socket(socket.AF_UNIX); c.connect(portmgr_unix_socket.getsockname()); c.close()
"""
    )
    record = pytester.path / "record.txt"
    os.environ["PORTMGR_TEST_RECORD"] = str(record)
    try:
        pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=2)
    finally:
        del os.environ["PORTMGR_TEST_RECORD"]
    assert not os.path.exists(record.read_text()), "the fixture's path outlived the test"
