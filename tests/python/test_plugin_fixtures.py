"""Issue 20: the plugin takes over port fixtures wherever they are defined
(``portmgr_port_fixtures``) and the pickers suites call directly (``portmgr_patch``).
Run through pytester; the plugin loads by its pytest11 entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from test_plugin import RECORD, quiet_asyncio, record_file, records  # noqa: F401  (fixtures)

# A copy of pytest-asyncio's port fixtures, as many projects keep one in conftest.py:
# bind(0), close, hope. Without the plugin these give ephemeral ports.
CONFTEST_COPY = """
import contextlib, socket, pytest

def _unused_port(socket_type):
    with contextlib.closing(socket.socket(type=socket_type)) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]

@pytest.fixture
def unused_tcp_port():
    return _unused_port(socket.SOCK_STREAM)

@pytest.fixture
def unused_udp_port():
    return _unused_port(socket.SOCK_DGRAM)

@pytest.fixture(scope="session")
def unused_tcp_port_factory():
    return lambda: _unused_port(socket.SOCK_STREAM)

@pytest.fixture(scope="session")
def free_port():
    return _unused_port(socket.SOCK_STREAM)
"""

EPHEMERAL = tuple(int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())


def ini(pytester: pytest.Pytester, *lines: str) -> None:
    pytester.makeini("\n".join(["[pytest]", "asyncio_default_fixture_loop_scope = function", *lines]) + "\n")


def test_conftest_fixtures_at_two_depths_are_replaced_with_their_scopes(pytester: pytest.Pytester, record_file: Path) -> None:
    ini(pytester, "portmgr_port_fixtures = unused_tcp_port unused_udp_port unused_tcp_port_factory free_port")
    pytester.makeconftest(CONFTEST_COPY)
    test = RECORD + """
import portmgr

def check(port, proto):
    info = portmgr.get_by_port(port)
    assert info is not None, f"{port} is not leased"
    assert info.protocols == proto
    return port

def test_a(unused_tcp_port, unused_udp_port, unused_tcp_port_factory, free_port):
    ports = [check(unused_tcp_port, "tcp"), check(unused_udp_port, "udp")]
    ports += [check(unused_tcp_port_factory(), "tcp") for _ in range(3)]
    record(where=__name__, ports=ports, session=check(free_port, "tcp"))

def test_b(unused_tcp_port, free_port):
    record(where=__name__, ports=[check(unused_tcp_port, "tcp")], session=check(free_port, "tcp"))
"""
    pytester.makepyfile(test_top=test)
    sub = pytester.mkpydir("sub")
    # A second definition of unused_tcp_port, deeper: the nearest conftest's wins there.
    (sub / "conftest.py").write_text(
        "import socket, pytest\n"
        "@pytest.fixture\n"
        "def unused_tcp_port(request):\n"
        "    s = socket.socket(); s.bind(('127.0.0.1', 0)); p = s.getsockname()[1]; s.close(); return p\n"
    )
    (sub / "test_deep.py").write_text(test)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)
    rows = records(record_file)
    assert len(rows) == 4
    sessions = {r["session"] for r in rows}
    assert len(sessions) == 1, f"a session-scoped fixture gave {sessions}"
    every = [p for r in rows for p in r["ports"]]  # type: ignore[union-attr]
    assert len(set(every)) == len(every), "ports handed out twice"
    assert not [p for p in every if EPHEMERAL[0] <= p <= EPHEMERAL[1]]
    # Released at teardown: nothing is left once the run is over.
    import portmgr

    assert [p for p in every + list(sessions) if portmgr.get_by_port(int(p)) is not None] == []  # type: ignore[arg-type]


def test_protocol_suffixes_and_an_unknown_name(pytester: pytest.Pytester, record_file: Path) -> None:
    ini(pytester, "portmgr_port_fixtures = free_port:udp unused_tcp_port:both nope_port")
    pytester.makeconftest(CONFTEST_COPY)
    pytester.makepyfile(
        """
import portmgr
def test_x(free_port, unused_tcp_port):
    assert portmgr.get_by_port(free_port).protocols == "udp"
    assert portmgr.get_by_port(unused_tcp_port).protocols == "both"
"""
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["portmgr: warning: *'nope_port'*no fixture of that name*"])
    # The command line option does the same.
    result = pytester.runpytest("-p", "no:cacheprovider", "--portmgr-port-fixtures", "free_port:tcp,unused_tcp_port")
    assert result.ret == 1  # free_port is TCP now: the UDP assertion fails
    bad = pytester.runpytest("-p", "no:cacheprovider", "--portmgr-port-fixtures", "x:sctp")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR


def test_replace_unused_port_wins_over_a_conftest_copy(pytester: pytest.Pytester) -> None:
    ini(pytester, "portmgr_replace_unused_port = true")
    pytester.makeconftest(CONFTEST_COPY)
    pytester.makepyfile(
        """
import portmgr
def test_x(unused_tcp_port, unused_udp_port, unused_tcp_port_factory):
    for p in (unused_tcp_port, unused_udp_port, unused_tcp_port_factory()):
        assert portmgr.get_by_port(p) is not None
"""
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_two_hundred_tests_under_xdist_bind_and_hold_their_ports(pytester: pytest.Pytester, tmp_path: Path) -> None:
    pytest.importorskip("xdist")
    ini(pytester, "portmgr_port_fixtures = unused_tcp_port")
    pytester.makeconftest(CONFTEST_COPY)
    out = tmp_path / "ports"
    out.mkdir()
    pytester.makepyfile(
        f"""
import os, socket, time, pytest

@pytest.mark.parametrize("i", range(200))
def test_bind(i, unused_tcp_port):
    s = socket.socket()
    s.bind(("127.0.0.1", unused_tcp_port))   # a bind failure fails the test
    s.listen()
    time.sleep(0.005)                        # held while the other workers run
    with open(os.path.join({str(out)!r}, f"{{i}}"), "w") as f:
        f.write(str(unused_tcp_port))
    s.close()
"""
    )
    result = pytester.runpytest_subprocess("-n", "4", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=200)
    ports = [int(p.read_text()) for p in out.iterdir()]
    assert len(ports) == 200
    assert not [p for p in ports if EPHEMERAL[0] <= p <= EPHEMERAL[1]], "ports from the ephemeral range"


def test_patched_pickers_give_registry_ports_held_until_the_test_ends(pytester: pytest.Pytester, record_file: Path) -> None:
    pytest.importorskip("portpicker")
    pytest.importorskip("ephemeral_port_reserve")
    ini(pytester, "portmgr_patch = portpicker ephemeral_port_reserve pytest_asyncio")
    pytester.makepyfile(
        RECORD
        + """
import socket, portmgr, portpicker, ephemeral_port_reserve, pytest
import pytest_asyncio.plugin

def test_pick():
    a = portpicker.pick_unused_port()
    b = ephemeral_port_reserve.reserve()
    c = pytest_asyncio.plugin._unused_port(socket.SOCK_DGRAM)
    assert portmgr.get_by_port(a).protocols == "both"
    assert portmgr.get_by_port(b).protocols == "tcp"
    assert portmgr.get_by_port(c).protocols == "udp"
    d = portpicker.pick_unused_port()
    portpicker.return_port(d)
    assert portmgr.get_by_port(d) is None
    record(ports=[a, b, c])

def test_after():
    import json, os, pathlib
    ports = json.loads(pathlib.Path(os.environ["PORTMGR_TEST_RECORD"]).read_text())["ports"]
    assert [p for p in ports if portmgr.get_by_port(p) is not None] == [], "held past the test"

def test_signatures_and_errors_kept():
    held = portpicker.pick_unused_port()
    with pytest.raises(OSError):
        ephemeral_port_reserve.reserve("127.0.0.1", held)   # a port someone holds
    assert ephemeral_port_reserve.reserve(port=0) > 0
"""
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)
    bad = pytester.runpytest("-p", "no:cacheprovider", "--portmgr-patch", "nosuchlib")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
