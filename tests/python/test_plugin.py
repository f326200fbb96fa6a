"""The pytest plugin, run through pytester (loaded by its pytest11 entry point)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import portmgr

RECORD = """
import json, os, pathlib
def record(**kw):
    path = pathlib.Path(os.environ["PORTMGR_TEST_RECORD"])
    with path.open("a") as f:
        f.write(json.dumps(kw) + "\\n")
"""


@pytest.fixture(autouse=True)
def quiet_asyncio(pytester: pytest.Pytester) -> None:
    # pytest-asyncio (installed for the replacement test) warns without this key.
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")


@pytest.fixture
def record_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "record.jsonl"
    monkeypatch.setenv("PORTMGR_TEST_RECORD", str(path))
    return path


def records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_fixtures(pytester: pytest.Pytester, record_file: Path) -> None:
    pytester.makepyfile(
        RECORD
        + """
import socket, pytest, portmgr

def held(p):
    return portmgr.get_by_port(p) is not None

def test_ports(portmgr_tcp_port, portmgr_udp_port, portmgr_registry):
    assert portmgr_tcp_port != portmgr_udp_port
    info = portmgr_registry.get_by_port(portmgr_udp_port)
    assert info.protocols == "udp"
    assert held(portmgr_tcp_port)
    s = socket.socket(); s.bind(("127.0.0.1", portmgr_tcp_port)); s.close()   # ours to bind
    record(test="ports", ports=[portmgr_tcp_port, portmgr_udp_port])

def test_factory(portmgr_port_factory):
    a = portmgr_port_factory("api")
    b = portmgr_port_factory(name="db", proto="both")
    block = portmgr_port_factory(count=3, contiguous=True)
    assert block == list(range(block[0], block[0] + 3))
    assert len({a, b, *block}) == 5
    assert portmgr.get_by_name("db")[0].protocols == "both"
    lease = portmgr_port_factory.lease(name="raw")
    record(test="factory", ports=[a, b, *block, lease.port])

def test_block_default(portmgr_port_block):
    assert len(portmgr_port_block) == 4
    assert portmgr_port_block == list(range(portmgr_port_block[0], portmgr_port_block[0] + 4))
    record(test="block", ports=portmgr_port_block)

@pytest.mark.portmgr_block(7)
def test_block_marker(portmgr_port_block):
    assert len(portmgr_port_block) == 7
    record(test="block7", ports=portmgr_port_block)

def test_sockets(portmgr_socket, portmgr_udp_socket):
    port = portmgr_socket.getsockname()[1]
    c = socket.create_connection(("127.0.0.1", port), timeout=5)
    conn, _ = portmgr_socket.accept(); conn.close(); c.close()
    assert portmgr_udp_socket.type == socket.SOCK_DGRAM
    assert held(port) and held(portmgr_udp_socket.getsockname()[1])
    record(test="sockets", ports=[port, portmgr_udp_socket.getsockname()[1]])

def test_session_a(portmgr_session_tcp_port, portmgr_session_udp_port, portmgr_session_port_block,
                   portmgr_session_socket, portmgr_session_port_factory):
    record(test="session", ports=[portmgr_session_tcp_port, portmgr_session_udp_port,
                                  portmgr_session_socket.getsockname()[1],
                                  portmgr_session_port_factory("s"), *portmgr_session_port_block])

def test_session_b(portmgr_session_tcp_port):
    assert held(portmgr_session_tcp_port)
    record(test="session_b", ports=[portmgr_session_tcp_port])
"""
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=7)
    rows = {r["test"]: r["ports"] for r in records(record_file)}
    assert rows["session_b"][0] == rows["session"][0]  # the same port for the session
    everything = [p for ports in rows.values() for p in ports]  # type: ignore[attr-defined]
    assert everything and all(isinstance(p, int) for p in everything)
    # Everything was released at teardown (function fixtures after each test, session at the end).
    assert not any(portmgr.get_by_port(p) for p in everything)
    assert portmgr.leases() == []


def test_fixtures_are_documented(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--fixtures", "-p", "no:cacheprovider")
    out = result.stdout.str()
    for name in ["portmgr_registry", "portmgr_tcp_port", "portmgr_udp_port", "portmgr_port_factory",
                 "portmgr_port_block", "portmgr_socket", "portmgr_udp_socket", "portmgr_session_tcp_port",
                 "portmgr_session_udp_port", "portmgr_session_port_factory", "portmgr_session_port_block",
                 "portmgr_session_socket"]:
        assert name in out, name
    assert "leased in the shared registry" in out


def test_opt_out(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(portmgr_tcp_port): pass")
    result = pytester.runpytest("-p", "no:portmgr", "-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'portmgr_tcp_port' not found*"])


def test_range_and_dir_options(pytester: pytest.Pytester, tmp_path: Path, record_file: Path) -> None:
    pytester.makeini(
        f"""
        [pytest]
        asyncio_default_fixture_loop_scope = function
        portmgr_range = 10700-10709
        portmgr_dir = {tmp_path / "run-registry"}
        portmgr_block_size = 2
        """
    )
    pytester.makepyfile(
        RECORD
        + """
import os
def test_x(portmgr_tcp_port, portmgr_session_port_block):
    assert 10700 <= portmgr_tcp_port <= 10709
    assert len(portmgr_session_port_block) == 2
    record(dir=os.environ["PORTMGR_DIR"])
"""
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert records(record_file) == [{"dir": str(tmp_path / "run-registry")}]
    result = pytester.runpytest("-p", "no:cacheprovider", "--portmgr-range", "10800-10801")
    result.assert_outcomes(errors=1)  # the command line wins over the ini: 10800-10801 is too small


def test_replaces_pytest_asyncio_unused_port(pytester: pytest.Pytester, record_file: Path) -> None:
    pytest.importorskip("pytest_asyncio")
    body = RECORD + """
import portmgr
def test_ports(unused_tcp_port, unused_udp_port, unused_tcp_port_factory, unused_udp_port_factory):
    a, b = unused_tcp_port_factory(), unused_udp_port_factory()
    rows = {p: portmgr.get_by_port(p) for p in (unused_tcp_port, unused_udp_port, a, b)}
    record(held={str(p): i is not None for p, i in rows.items()})
"""
    pytester.makepyfile(body)
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\nportmgr_replace_unused_port = true\n")
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)
    replaced, original = records(record_file)
    assert all(replaced["held"].values())  # type: ignore[union-attr]
    assert not any(original["held"].values())  # type: ignore[union-attr]


def test_under_xdist(pytester: pytest.Pytester, record_file: Path) -> None:
    pytest.importorskip("xdist")
    pytester.makepyfile(
        RECORD
        + """
import os, pytest, time
@pytest.mark.parametrize("i", range(8))
def test_x(i, portmgr_port_factory):
    ports = [portmgr_port_factory() for _ in range(20)]
    time.sleep(0.05)
    record(worker=os.environ.get("PYTEST_XDIST_WORKER"), ports=ports)
"""
    )
    result = pytester.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=8)
    rows = records(record_file)
    assert {r["worker"] for r in rows} == {"gw0", "gw1"}
    assert not any(portmgr.get_by_port(p) for r in rows for p in r["ports"])  # type: ignore[attr-defined]
