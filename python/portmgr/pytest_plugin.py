"""The portmgr pytest plugin: race-free ports for tests, shared by every process.

Installed with the package (entry point ``pytest11: portmgr``); switch it off with
``-p no:portmgr``. Every port comes from the shared registry, so pytest-xdist
workers, and every subprocess a test starts (C, C++, shell via ``portmgr``), are
never handed the same port. Everything a fixture allocates is released at its
teardown.

Fixtures (function scope; the ``portmgr_session_*`` ones live for the whole run):

=================================  ====================================================
``portmgr_registry`` (session)     the :class:`portmgr.Registry` the fixtures use
``portmgr_tcp_port``               an ``int``: a TCP port leased for the test
``portmgr_udp_port``               an ``int``: a UDP port leased for the test
``portmgr_port_factory``           ``factory(name=None, proto="tcp", count=1, **opts)``
                                   -> ``int`` (a ``list[int]`` when count > 1)
``portmgr_port_block``             ``list[int]``: N consecutive TCP ports (N from
                                   ``@pytest.mark.portmgr_block(N)``, else the
                                   ``portmgr_block_size`` ini value, 4)
``portmgr_socket``                 a listening TCP ``socket.socket`` on a leased port
``portmgr_udp_socket``             a bound UDP ``socket.socket`` on a leased port
``portmgr_session_tcp_port``       as above, for the session
``portmgr_session_udp_port``
``portmgr_session_port_factory``
``portmgr_session_port_block``
``portmgr_session_socket``
=================================  ====================================================

A port handed over as an ``int`` is recorded in the registry but held by no socket,
so the server under test can bind it. The socket fixtures are the race-free form.

Options (command line / ini): ``--portmgr-dir`` / ``portmgr_dir`` (the registry
directory; exported as ``PORTMGR_DIR`` so subprocesses share it), ``--portmgr-range``
/ ``portmgr_range`` (where fixture ports come from; default: the default pool), and
the ini keys ``portmgr_block_size`` and ``portmgr_replace_unused_port``: when true,
pytest-asyncio's ``unused_tcp_port``, ``unused_udp_port``, ``unused_tcp_port_factory``
and ``unused_udp_port_factory`` are replaced by registry-backed versions.
"""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING, Any, Callable, Iterator, Literal, Optional, Union, overload

import pytest

if TYPE_CHECKING:
    from portmgr import Lease, Registry

_Proto = Literal["tcp", "udp", "both"]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("portmgr", "portmgr: race-free ports from the shared registry")
    group.addoption(
        "--portmgr-dir",
        dest="portmgr_dir",
        default=None,
        help="registry directory for this run (exported as PORTMGR_DIR); default: the user's registry",
    )
    group.addoption(
        "--portmgr-range",
        dest="portmgr_range",
        default=None,
        help="range the portmgr fixtures draw from, START-END; default: the default pool",
    )
    parser.addini("portmgr_dir", "registry directory for this run (see --portmgr-dir)", default="")
    parser.addini("portmgr_range", "range the portmgr fixtures draw from, START-END", default="")
    parser.addini("portmgr_block_size", "ports in portmgr_port_block when no marker says", default="4")
    parser.addini(
        "portmgr_replace_unused_port",
        "replace pytest-asyncio's unused_tcp_port, unused_udp_port and their factories with portmgr's",
        type="bool",
        default=False,
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "portmgr_block(size): how many consecutive ports portmgr_port_block gives"
    )
    directory = config.getoption("portmgr_dir") or config.getini("portmgr_dir")
    if directory:
        # Subprocesses (and xdist workers) inherit it: one registry for the whole run.
        os.environ["PORTMGR_DIR"] = os.path.abspath(str(directory))
    if config.getini("portmgr_replace_unused_port"):
        # Registered after pytest-asyncio, so these definitions win.
        config.pluginmanager.register(_UnusedPortFixtures(), "portmgr-unused-port")


def _range(config: pytest.Config) -> Optional[str]:
    value = config.getoption("portmgr_range") or config.getini("portmgr_range")
    return str(value) if value else None


class PortFactory:
    """Leases ports on call; releases all of them at teardown (``close()``)."""

    def __init__(self, registry: Registry, range: Optional[str]) -> None:
        self._registry = registry
        self._range = range
        self._leases: list[Lease] = []

    @overload
    def __call__(
        self, name: Optional[str] = None, proto: _Proto = "tcp", count: Literal[1] = 1, **options: Any
    ) -> int: ...
    @overload
    def __call__(self, name: Optional[str] = None, proto: _Proto = "tcp", count: int = 1, **options: Any) -> list[int]: ...
    def __call__(
        self, name: Optional[str] = None, proto: _Proto = "tcp", count: int = 1, **options: Any
    ) -> Union[int, list[int]]:
        """Lease ``count`` ports (``int`` for one, ``list[int]`` for several).

        ``options`` are those of :func:`portmgr.allocate` (``contiguous``, ``range``,
        ``strategy``, ``preferred``...).
        """
        options.setdefault("range", self._range)
        lease = self._registry.allocate(name=name, proto=proto, count=count, **options)
        self._leases.append(lease)
        return lease.port if count == 1 else lease.ports

    def lease(self, **options: Any) -> Lease:
        """Allocate and return the :class:`portmgr.Lease` itself (released at teardown)."""
        options.setdefault("range", self._range)
        lease = self._registry.allocate(**options)
        self._leases.append(lease)
        return lease

    def close(self) -> None:
        """Release everything handed out."""
        while self._leases:
            self._leases.pop().release()


def _registry(config: pytest.Config) -> Registry:
    import portmgr

    return portmgr.registry()


def _block_size(request: pytest.FixtureRequest) -> int:
    marker = request.node.get_closest_marker("portmgr_block") if request.scope == "function" else None
    if marker is not None:
        size = marker.kwargs.get("size", marker.args[0] if marker.args else None)
        if size is not None:
            return int(size)
    return int(request.config.getini("portmgr_block_size"))


def _socket(registry: Registry, proto: Literal["tcp", "udp"], range: Optional[str]) -> Iterator[socket.socket]:
    lease, socks = registry.allocate_bound(proto=proto, range=range)
    try:
        with socks[0]:
            yield socks[0]
    finally:
        lease.release()


@pytest.fixture(scope="session")
def portmgr_registry(pytestconfig: pytest.Config) -> Registry:
    """The :class:`portmgr.Registry` every portmgr fixture allocates from: the user's
    shared registry (``PORTMGR_DIR``, ``--portmgr-dir``), shared with xdist workers
    and subprocesses.

        def test_view(portmgr_registry, portmgr_tcp_port):
            assert portmgr_registry.get_by_port(portmgr_tcp_port) is not None
    """
    return _registry(pytestconfig)


@pytest.fixture
def portmgr_port_factory(portmgr_registry: Registry, pytestconfig: pytest.Config) -> Iterator[PortFactory]:
    """Call it to lease ports; all are released after the test.

        def test_two_servers(portmgr_port_factory):
            api, db = portmgr_port_factory("api"), portmgr_port_factory("db", proto="both")
            a, b, c = portmgr_port_factory(count=3, contiguous=True)
    """
    factory = PortFactory(portmgr_registry, _range(pytestconfig))
    yield factory
    factory.close()


@pytest.fixture
def portmgr_tcp_port(portmgr_port_factory: PortFactory) -> int:
    """A TCP port leased in the shared registry for this test (not bound: yours to bind).

        def test_server(portmgr_tcp_port):
            server = start_server(port=portmgr_tcp_port)
    """
    return portmgr_port_factory(proto="tcp")


@pytest.fixture
def portmgr_udp_port(portmgr_port_factory: PortFactory) -> int:
    """A UDP port leased in the shared registry for this test (not bound).

        def test_dns(portmgr_udp_port):
            resolver = start_dns(port=portmgr_udp_port)
    """
    return portmgr_port_factory(proto="udp")


@pytest.fixture
def portmgr_port_block(request: pytest.FixtureRequest, portmgr_port_factory: PortFactory) -> list[int]:
    """N consecutive TCP ports (``@pytest.mark.portmgr_block(N)``, default 4).

        @pytest.mark.portmgr_block(3)
        def test_cluster(portmgr_port_block):
            nodes = [start_node(port=p) for p in portmgr_port_block]
    """
    return portmgr_port_factory(count=_block_size(request), contiguous=True)


@pytest.fixture
def portmgr_socket(portmgr_registry: Registry, pytestconfig: pytest.Config) -> Iterator[socket.socket]:
    """A TCP ``socket.socket`` bound and listening on a registry-held port: race-free.
    Closed and released after the test.

        def test_accept(portmgr_socket):
            port = portmgr_socket.getsockname()[1]
    """
    yield from _socket(portmgr_registry, "tcp", _range(pytestconfig))


@pytest.fixture
def portmgr_udp_socket(portmgr_registry: Registry, pytestconfig: pytest.Config) -> Iterator[socket.socket]:
    """A UDP ``socket.socket`` bound on a registry-held port. Closed and released after
    the test.

        def test_recv(portmgr_udp_socket):
            port = portmgr_udp_socket.getsockname()[1]
    """
    yield from _socket(portmgr_registry, "udp", _range(pytestconfig))


@pytest.fixture(scope="session")
def portmgr_session_port_factory(portmgr_registry: Registry, pytestconfig: pytest.Config) -> Iterator[PortFactory]:
    """``portmgr_port_factory`` for the whole session: released when the run ends.

        @pytest.fixture(scope="session")
        def database(portmgr_session_port_factory):
            return start_db(port=portmgr_session_port_factory("db"))
    """
    factory = PortFactory(portmgr_registry, _range(pytestconfig))
    yield factory
    factory.close()


@pytest.fixture(scope="session")
def portmgr_session_tcp_port(portmgr_session_port_factory: PortFactory) -> int:
    """A TCP port leased for the whole session.

        def test_a(portmgr_session_tcp_port): ...
        def test_b(portmgr_session_tcp_port): ...   # the same port
    """
    return portmgr_session_port_factory(proto="tcp")


@pytest.fixture(scope="session")
def portmgr_session_udp_port(portmgr_session_port_factory: PortFactory) -> int:
    """A UDP port leased for the whole session.

        def test_a(portmgr_session_udp_port): ...
    """
    return portmgr_session_port_factory(proto="udp")


@pytest.fixture(scope="session")
def portmgr_session_port_block(request: pytest.FixtureRequest, portmgr_session_port_factory: PortFactory) -> list[int]:
    """N consecutive TCP ports for the session (N: the ``portmgr_block_size`` ini value).

        def test_cluster(portmgr_session_port_block): ...
    """
    return portmgr_session_port_factory(count=_block_size(request), contiguous=True)


@pytest.fixture(scope="session")
def portmgr_session_socket(portmgr_registry: Registry, pytestconfig: pytest.Config) -> Iterator[socket.socket]:
    """A listening TCP socket on a registry-held port for the whole session.

        def test_a(portmgr_session_socket): ...
    """
    yield from _socket(portmgr_registry, "tcp", _range(pytestconfig))


class _UnusedPortFixtures:
    """pytest-asyncio's port fixtures, backed by the registry (``portmgr_replace_unused_port``).

    Same names, scopes and return types as pytest-asyncio's; no bind-close-hope race.
    """

    @pytest.fixture
    def unused_tcp_port(self, portmgr_tcp_port: int) -> int:
        """A TCP port leased in the portmgr registry for this test."""
        return portmgr_tcp_port

    @pytest.fixture
    def unused_udp_port(self, portmgr_udp_port: int) -> int:
        """A UDP port leased in the portmgr registry for this test."""
        return portmgr_udp_port

    @pytest.fixture(scope="session")
    def unused_tcp_port_factory(self, portmgr_session_port_factory: PortFactory) -> Callable[[], int]:
        """A factory of TCP ports leased in the portmgr registry for the session."""
        return lambda: portmgr_session_port_factory(proto="tcp")

    @pytest.fixture(scope="session")
    def unused_udp_port_factory(self, portmgr_session_port_factory: PortFactory) -> Callable[[], int]:
        """A factory of UDP ports leased in the portmgr registry for the session."""
        return lambda: portmgr_session_port_factory(proto="udp")
