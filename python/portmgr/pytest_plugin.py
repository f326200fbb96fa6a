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
``portmgr_unix_path``              a fresh Unix-socket path (``str``), removed after
                                   the test: for servers that need no TCP port
``portmgr_unix_socket``            a listening ``AF_UNIX`` socket on such a path
=================================  ====================================================

A port handed over as an ``int`` is recorded in the registry but held by no socket,
so the server under test can bind it. The socket fixtures are the race-free form.

Options (command line / ini): ``--portmgr-dir`` / ``portmgr_dir`` (the registry
directory; exported as ``PORTMGR_DIR`` so subprocesses share it), ``--portmgr-range``
/ ``portmgr_range`` (where fixture ports come from; default: the default pool), and
the ini key ``portmgr_block_size``.

Existing port fixtures, wherever they are defined (a ``conftest.py`` at any depth, a
plugin, pytest-asyncio), get their value from the registry instead of their own code
when named in ``portmgr_port_fixtures`` (ini, a list) or ``--portmgr-port-fixtures``::

    [pytest]
    portmgr_port_fixtures = unused_tcp_port unused_tcp_port_factory unused_udp_port free_port:udp

Each is an ``int`` port leased for the fixture's own scope and released at its
teardown; a name ending in ``_factory`` gets a factory returning a new leased port per
call; ``:udp`` / ``:both`` choose the protocol (TCP by default; a name containing
``udp`` defaults to UDP). ``portmgr_replace_unused_port = true`` is the shorthand for
pytest-asyncio's four (``unused_tcp_port``, ``unused_udp_port`` and their factories),
and defines them when nothing else does.

Pickers that tests call directly return registry ports for the whole session (in every
xdist worker) when named in ``portmgr_patch`` (``--portmgr-patch``): ``portpicker``
(``pick_unused_port``, ``return_port``), ``ephemeral_port_reserve`` (``reserve``),
``pytest_asyncio`` (its ``_unused_port`` helper). Signatures and exceptions are kept; a
port picked in a test's body is held until that test ends, one picked during setup (a
fixture) until the session ends; a library that is not installed is skipped with a note.
"""

from __future__ import annotations

import errno
import functools
import importlib
import os
import socket
from dataclasses import dataclass
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
    group.addoption(
        "--portmgr-port-fixtures",
        dest="portmgr_port_fixtures",
        default=None,
        help="fixtures whose value portmgr provides, wherever defined: NAME[:tcp|udp|both], comma- or space-separated",
    )
    parser.addini(
        "portmgr_port_fixtures",
        "fixtures whose value portmgr provides, wherever they are defined: NAME[:tcp|udp|both] ...",
        type="args",
        default=[],
    )
    group.addoption(
        "--portmgr-patch",
        dest="portmgr_patch",
        default=None,
        help="pickers to back by the registry: portpicker, ephemeral_port_reserve, pytest_asyncio (comma- or space-separated)",
    )
    parser.addini(
        "portmgr_patch",
        "pickers to back by the registry: portpicker ephemeral_port_reserve pytest_asyncio",
        type="args",
        default=[],
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
        # Defines them when nothing else does; the fixture-setup hook below replaces the
        # value of every definition (a conftest copy included).
        config.pluginmanager.register(_UnusedPortFixtures(), "portmgr-unused-port")
    specs = _port_fixture_specs(config)
    if specs:
        config.pluginmanager.register(_PortFixtures(specs), "portmgr-port-fixtures")
    patch = _words(config.getoption("portmgr_patch")) or [str(w) for w in config.getini("portmgr_patch")]
    if patch:
        patcher = _Patcher(config, patch)
        config.pluginmanager.register(patcher, "portmgr-patch")
        patcher.install()


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


@pytest.fixture
def portmgr_unix_path(portmgr_registry: Registry) -> Iterator[str]:
    """A fresh Unix-socket path (a ``str``) in the registry's private sockets directory,
    for a server that needs no TCP port; removed after the test.

        def test_redis(portmgr_unix_path):
            start_redis(unixsocket=portmgr_unix_path)
    """
    with portmgr_registry.unix_socket_path() as p:
        yield p.path


@pytest.fixture
def portmgr_unix_socket(portmgr_registry: Registry) -> Iterator[socket.socket]:
    """A listening ``AF_UNIX`` socket on a fresh path; closed and removed after the test.

        def test_accept(portmgr_unix_socket):
            path = portmgr_unix_socket.getsockname()
    """
    path, sock = portmgr_registry.bound_unix_socket()
    with path, sock:
        yield sock


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


# ---------------------------------------------------------------------------------------
# Port fixtures by name (portmgr_port_fixtures)

#: pytest-asyncio's port fixtures: what ``portmgr_replace_unused_port`` stands for.
UNUSED_PORT_FIXTURES = ("unused_tcp_port", "unused_udp_port", "unused_tcp_port_factory", "unused_udp_port_factory")


@dataclass(frozen=True)
class PortFixtureSpec:
    """One entry of ``portmgr_port_fixtures``: a fixture name, its protocol, and whether
    it is a factory."""

    name: str
    proto: _Proto
    factory: bool

    @staticmethod
    def parse(entry: str) -> "PortFixtureSpec":
        name, _, proto = entry.partition(":")
        name = name.strip()
        if not name.isidentifier():
            raise pytest.UsageError(f"portmgr_port_fixtures: {entry!r} is not a fixture name (NAME or NAME:tcp|udp|both)")
        if not proto:
            proto = "udp" if "udp" in name else "tcp"
        if proto not in ("tcp", "udp", "both"):
            raise pytest.UsageError(f"portmgr_port_fixtures: {entry!r}: the protocol is tcp, udp or both, not {proto!r}")
        return PortFixtureSpec(name, proto, name.endswith("_factory"))  # type: ignore[arg-type]


def _words(value: Optional[str]) -> list[str]:
    return [w for w in (value or "").replace(",", " ").split() if w]


def _port_fixture_specs(config: pytest.Config) -> dict[str, PortFixtureSpec]:
    entries = _words(config.getoption("portmgr_port_fixtures")) or [str(e) for e in config.getini("portmgr_port_fixtures")]
    if config.getini("portmgr_replace_unused_port"):
        entries = list(UNUSED_PORT_FIXTURES) + entries
    specs: dict[str, PortFixtureSpec] = {}
    for e in entries:
        spec = PortFixtureSpec.parse(e)
        specs[spec.name] = spec
    return specs


class _PortFixtures:
    """Gives the named fixtures their value from the registry, wherever they are
    defined: the fixture's own function is not called."""

    def __init__(self, specs: dict[str, PortFixtureSpec]) -> None:
        self.specs = specs
        self.unknown: list[str] = []

    @pytest.hookimpl(tryfirst=True)
    def pytest_fixture_setup(self, fixturedef: Any, request: pytest.FixtureRequest) -> Optional[object]:
        spec = self.specs.get(fixturedef.argname)
        if spec is None:
            return None
        registry = _registry(request.config)
        rng = _range(request.config)
        value: object
        if spec.factory:
            factory = PortFactory(registry, rng)
            proto = spec.proto

            def make() -> int:
                return factory(proto=proto)

            value = make
            fixturedef.addfinalizer(factory.close)
        else:
            lease = registry.allocate(proto=spec.proto, range=rng)
            value = lease.port
            fixturedef.addfinalizer(lease.release)
        # What pytest's own fixture setup records: the value, cached for the fixture's scope.
        fixturedef.cached_result = (value, fixturedef.cache_key(request), None)
        return value

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        fm = getattr(session, "_fixturemanager", None)
        # The name of pytest's table of fixture definitions (pytest 8, pytest 9).
        known = getattr(fm, "_arg2fixturedefs", None) or getattr(fm, "_arg2node2fixturedefs", None)
        if known is None:
            return
        # A note, not a Python warning: a suite run with -W error must not fail on it.
        self.unknown = sorted(set(self.specs) - set(known) - set(UNUSED_PORT_FIXTURES))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        for name in self.unknown:
            terminalreporter.write_line(
                f"portmgr: warning: portmgr_port_fixtures names {name!r}, but no fixture of that name is defined",
                yellow=True,
            )


# ---------------------------------------------------------------------------------------
# Pickers called directly (portmgr_patch)

PATCHABLE = ("portpicker", "ephemeral_port_reserve", "pytest_asyncio")


class _Patcher:
    """Backs the named pickers by the registry for the session; restores them at the end."""

    def __init__(self, config: pytest.Config, names: list[str]) -> None:
        for n in names:
            if n not in PATCHABLE:
                raise pytest.UsageError(f"portmgr_patch: {n!r} is not one of {', '.join(PATCHABLE)}")
        self.config = config
        self.names = names
        self.notes: list[str] = []
        self.restore: list[tuple[object, str, object]] = []
        self.session_leases: list[Lease] = []
        self.test_leases: Optional[list[Lease]] = None
        self.by_port: dict[int, Lease] = {}

    def _lease(self, **options: Any) -> Lease:
        options.setdefault("range", _range(self.config))
        lease = _registry(self.config).allocate(**options)
        (self.test_leases if self.test_leases is not None else self.session_leases).append(lease)
        self.by_port[lease.port] = lease
        return lease

    def _set(self, obj: object, attr: str, value: object) -> None:
        self.restore.append((obj, attr, getattr(obj, attr)))
        setattr(obj, attr, value)

    def install(self) -> None:
        import portmgr

        for name in self.names:
            try:
                mod = importlib.import_module("pytest_asyncio.plugin" if name == "pytest_asyncio" else name)
            except ImportError:
                self.notes.append(f"portmgr_patch: {name} is not installed; nothing to patch")
                continue
            if name == "portpicker":
                self._patch_portpicker(mod, portmgr)
            elif name == "ephemeral_port_reserve":
                self._patch_epr(mod, portmgr)
            else:
                self._patch_pytest_asyncio(mod)

    def _patch_portpicker(self, mod: Any, portmgr: Any) -> None:
        original_pick = mod.pick_unused_port
        original_return = mod.return_port

        @functools.wraps(original_pick)
        def pick_unused_port(pid: Optional[int] = None, portserver_address: Optional[str] = None) -> int:
            try:
                return self._lease(proto="both").port
            except portmgr.PortsExhausted as e:
                raise mod.NoFreePortFoundError(str(e)) from e

        @functools.wraps(original_return)
        def return_port(port: int) -> None:
            lease = self.by_port.pop(port, None)
            if lease is None:
                original_return(port)
            else:
                lease.release()

        self._set(mod, "pick_unused_port", pick_unused_port)
        self._set(mod, "return_port", return_port)
        if getattr(mod, "PickUnusedPort", None) is original_pick:
            self._set(mod, "PickUnusedPort", pick_unused_port)
        if getattr(mod, "ReturnPort", None) is original_return:
            self._set(mod, "ReturnPort", return_port)

    def _patch_epr(self, mod: Any, portmgr: Any) -> None:
        original = mod.reserve

        @functools.wraps(original)
        def reserve(ip: str = getattr(mod, "LOCALHOST", "127.0.0.1"), port: int = 0) -> int:
            options: dict[str, Any] = {"proto": "tcp", "host": ip}
            if port:
                options.update(preferred=port, required=True)
            try:
                return self._lease(**options).port
            except portmgr.PortInUse as e:
                raise OSError(errno.EADDRINUSE, str(e)) from e

        self._set(mod, "reserve", reserve)

    def _patch_pytest_asyncio(self, mod: Any) -> None:
        original = mod._unused_port

        @functools.wraps(original)
        def _unused_port(socket_type: int) -> int:
            return self._lease(proto="udp" if socket_type == socket.SOCK_DGRAM else "tcp").port

        self._set(mod, "_unused_port", _unused_port)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Iterator[None]:
        # Ports picked in the test's body are held until it ends.
        self.test_leases = []
        try:
            return (yield)
        finally:
            leases, self.test_leases = self.test_leases, None
            for lease in leases:
                self.by_port.pop(lease.port, None)
                lease.release()

    def pytest_report_header(self, config: pytest.Config) -> list[str]:
        done = [n for n in self.names if not any(n in note for note in self.notes)]
        return [f"portmgr: registry-backed pickers: {', '.join(done) or 'none'}"] + self.notes

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        for obj, attr, value in reversed(self.restore):
            setattr(obj, attr, value)
        self.restore.clear()
        for lease in self.session_leases:
            lease.release()
        self.session_leases.clear()
