"""portmgr: network ports that no other process on this host is handed.

Every process that allocates through portmgr — pytest-xdist workers, C and C++ test
binaries, shell scripts via the ``portmgr`` command — shares one crash-safe registry
per user, so nobody is handed a port someone else holds, and a process that dies
(even by SIGKILL) frees its ports at once::

    import portmgr

    lease = portmgr.allocate()                  # one TCP port from the default pool
    lease.port                                  # int (lease.ports for several)
    lease.release()                             # idempotent
    with portmgr.allocate(name="db", proto="udp") as lease:
        ...                                     # released on exit
    port = portmgr.free_port()                  # held until portmgr.release(port) or exit
    portmgr.release(port)
    sock = portmgr.bound_socket(proto="tcp")    # bound and listening: race-free

Named services, types, groups, export and import (the ``portmgr::mapping`` layer)::

    api = portmgr.allocate(name="api", type="rest-api", metadata={"owner": "team-a"})
    portmgr.get_service("api").metadata         # {"owner": "team-a"}
    with portmgr.allocate_group("ci-17", {"postgres": 0, "redis": 100}) as g:
        g["redis"]                              # base + 100
    portmgr.export("env")                       # "API_PORT=8083\n..."
    report = portmgr.import_services(".env.dynamic")

A port number (lease, free_port) is recorded in the registry but held by no socket,
so your server can bind it; another program that does not use portmgr could still
bind it first. A bound socket is the race-free hand-over.

The default registry lives in ``$PORTMGR_DIR``, else ``$XDG_RUNTIME_DIR/portmgr``,
else a per-user directory in the temp dir; the default pool is outside the kernel's
ephemeral range (``$PORTMGR_RANGE`` overrides it).
"""

from __future__ import annotations

import atexit
import builtins
import os
import socket
import sys
import threading
import weakref
from collections.abc import Mapping as _Mapping
from typing import TYPE_CHECKING, Any, Callable, Iterable, Literal, Optional, Sequence, TypedDict, Union

from . import _native
from ._native import (
    Endpoint,
    Resolver,
    stun_external_address,
    Mapping,
    nat_unmap,
    Candidate,
    FirstReachable,
    HealthEntry,
    HistoryProblem,
    Group,
    GroupMember,
    Health,
    ImportedService,
    ImportReport,
    Lease,
    LeaseInfo,
    NginxApplied,
    Problem,
    RangeUse,
    Registry,
    Reservation,
    Service,
    Services,
    ServiceType,
    ReservedRange,
    Stats,
    UnixSocketPath,
    default_dir,
    default_pool,
    first_reachable,
    is_free,
    reachable,
    scan,
    wait_free,
    wait_listening,
)
from .errors import (
    InsecureDirectory,
    InternalError,
    InvalidArgument,
    LockTimeout,
    NameInUse,
    NotFound,
    NotOwner,
    PortError,
    PortInUse,
    PortOSError,
    PortsExhausted,
    PortTimeout,
    RegistryCorrupt,
    RegistryError,
)

__version__: str = _native.__version__

__all__ = [
    # name resolution and NAT traversal (portmgr::resolve, portmgr::nat)
    "Endpoint",
    "Resolver",
    "stun_external_address",
    "Mapping",
    "PortMapping",
    "nat_map",
    "nat_unmap",
    # allocation
    "allocate",
    "allocate_bound",
    "get_or_allocate",
    "free_port",
    "release",
    "release_name",
    "release_id",
    "renew",
    "renew_name",
    "renew_id",
    "bound_socket",
    "bound_sockets",
    "unix_socket_path",
    "bound_unix_socket",
    "UnixSocketPath",
    "Lease",
    # registry and its views
    "Registry",
    "registry",
    "leases",
    "get_by_name",
    "get_by_port",
    "stats",
    "gc",
    "health",
    "health_history",
    "HealthMonitor",
    "HealthEntry",
    "HistoryProblem",
    "overview",
    "stats_full",
    "Health",
    "Problem",
    "RangeUse",
    "LeaseInfo",
    "Stats",
    "ReservedRange",
    "reserve",
    "unreserve",
    "reserved",
    "default_dir",
    "default_pool",
    # probes
    "first_reachable",
    "FirstReachable",
    "Candidate",
    # named services, types, groups, export and import
    "Services",
    "services",
    "Service",
    "ServiceType",
    "get_or_allocate_service",
    "list_services",
    "get_service",
    "get_service_by_port",
    "services_by_type",
    "services_by_group",
    "update_metadata",
    "service_types",
    "allocate_group",
    "release_group",
    "Group",
    "GroupMember",
    "export",
    "write_nginx_dir",
    "apply_nginx",
    "NginxApplied",
    "import_services",
    "ImportReport",
    "ImportedService",
    # in-process reservation and probes
    "Reservation",
    "is_free",
    "scan",
    "wait_listening",
    "wait_free",
    "reachable",
    # errors
    "PortError",
    "InvalidArgument",
    "PortsExhausted",
    "PortInUse",
    "NameInUse",
    "NotFound",
    "NotOwner",
    "PortTimeout",
    "LockTimeout",
    "RegistryError",
    "RegistryCorrupt",
    "InsecureDirectory",
    "PortOSError",
    "InternalError",
]

Proto = Literal["tcp", "udp", "both"]
StrategyName = Literal["sequential", "random", "hash", "kernel"]
RangeLike = Union[tuple[int, int], str, range]
SpansLike = Union[int, tuple[int, int], str, Iterable[Union[int, tuple[int, int], str]]]

if TYPE_CHECKING:
    from typing_extensions import Unpack

    # The allocation keywords, for type checkers: the wrappers pass what they are given
    # straight to the extension, which reads, defaults and checks every keyword in one
    # place (src/python/request.rs). Defaults: see allocate's docstring.
    class _Placement(TypedDict, total=False):
        range: Optional[RangeLike]
        strategy: StrategyName
        name: Optional[str]
        preferred: Optional[int]
        required: bool
        host: Optional[str]
        exclude: Optional[SpansLike]

    class _BoundSocketOptions(_Placement, total=False):
        proto: Literal["tcp", "udp"]

    class _FreePortOptions(_Placement, total=False):
        proto: Proto
        ttl: Optional[float]
        watch_pid: Optional[int]
        key: Optional[str]

    class _AllocateOptions(_FreePortOptions, total=False):
        count: int
        contiguous: bool
        type: Optional[str]
        metadata: Optional[_Mapping[str, str]]
        internal_ports: Optional[Sequence[int]]

# The default registry, opened on first use and again when PORTMGR_DIR changes.
_lock = threading.Lock()
_default: Optional[Registry] = None
_default_key: Optional[str] = None


def registry() -> Registry:
    """The shared default :class:`Registry` (``$PORTMGR_DIR`` honoured, also when it
    changes), opened on first use."""
    global _default, _default_key
    key = os.environ.get("PORTMGR_DIR")
    reg = _default
    if reg is not None and _default_key == key:
        return reg
    with _lock:
        if _default is None or _default_key != key:
            _default = Registry()
            _default_key = key
        return _default


_registry = registry

#: The name ``nat_map`` returned before it became a live, lease-tied handle.
PortMapping = Mapping


def nat_map(
    port: int,
    protocol: Literal["natpmp", "upnp", "auto"] = "auto",
    *,
    gateway: Optional[str] = None,
    lifetime: float = 3600.0,
    udp: bool = False,
    registry: Optional[Registry] = None,
) -> Mapping:
    """Map ``port`` of this host on the gateway (NAT-PMP, UPnP IGD, or ``"auto"``:
    NAT-PMP, then UPnP IGD) for ``lifetime`` seconds, asking for the same external port.

    When a lease in ``registry`` (default: the shared one) holds ``port``, the mapping is
    tied to it: renewed at half its lifetime while the lease lives, deleted when the
    lease is released or expires (best effort; a failure is in :attr:`Mapping.error`).
    Otherwise it lasts ``lifetime``. ``Mapping.delete()`` (or leaving ``with``) deletes it
    at once."""
    return _native.nat_map(
        port, protocol, gateway=gateway, lifetime=lifetime, udp=udp, registry=registry if registry is not None else _registry()
    )


def _after_fork_in_child() -> None:
    # A lock copied from the parent may be held by a thread the child does not have.
    global _lock
    _lock = threading.Lock()
    _native._after_fork_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def allocate(**options: Unpack[_AllocateOptions]) -> Lease:
    """Allocate ports from the shared registry and return the :class:`Lease`.

    proto:      "tcp", "udp" or "both" (free for both).
    count:      how many ports, all or nothing; ``contiguous`` makes them consecutive.
    range:      inclusive ``(start, end)``, ``"start-end"`` or ``range(a, b)``;
                None = the default pool.
    strategy:   "random", "sequential" (lowest free), "hash" (stable start from
                FNV-1a of ``key`` or ``name``) or "kernel" (bind 0).
    name:       a service name, unique among live leases (NameInUse otherwise).
    preferred:  try this port first; ``required=True`` fails (PortInUse) if taken.
    ttl:        seconds the lease lives whether or not this process does (renewable);
                None = as long as this process.
    watch_pid:  hold while that process lives.
    host:       probe this address instead of every address.
    exclude:    ports never to hand out: ``[9100, (9200, 9299)]`` or ``"9100,9200-9299"``
                (besides the registry-wide :func:`reserve` ones).
    type:       a service type ("rest-api", "database", ... see :func:`service_types`):
                without ``range``, the port is drawn from the type's range; the type
                is recorded (:func:`services_by_type`).
    metadata:   string key/values recorded with the lease (:func:`get_service`).
    internal_ports: a module's internal ports: one external port each, all in one
                lease; ``lease.port_map`` is ``{8080: 15123, 9090: 15124}`` (internal
                ports in order get the external ports in ascending order).

    The lease is not released by garbage collection: call ``release()``, use it as a
    context manager, or let the process exit.
    """
    return registry().allocate(**options)


def allocate_bound(**options: Unpack[_AllocateOptions]) -> tuple[Lease, builtins.list[socket.socket]]:
    """Like :func:`allocate`, and hand the ports over bound: a listening TCP socket
    and/or a bound UDP socket per port (TCP first). The race-free hand-over."""
    return registry().allocate_bound(**options)


def free_port(**options: Unpack[_FreePortOptions]) -> int:
    """One port, held in the registry until :func:`release` or until this process exits
    (the options of :func:`allocate` but ``count``, ``contiguous``, ``type`` and
    ``metadata``)."""
    return registry().free_port(**options)


def get_or_allocate(
    name: str,
    *,
    proto: Proto = "tcp",
    count: int = 1,
    contiguous: bool = False,
    range: Optional[RangeLike] = None,
    strategy: StrategyName = "random",
    ttl: Optional[float] = None,
) -> Union[Lease, builtins.list[LeaseInfo]]:
    """The live lease named ``name`` (a list of :class:`LeaseInfo`, possibly another
    process's) if there is one, else a new :class:`Lease` for it. With a service type
    or metadata: :func:`get_or_allocate_service`."""
    return registry().get_or_allocate(
        name, proto=proto, count=count, contiguous=contiguous, range=range, strategy=strategy, ttl=ttl
    )


def renew_name(name: str, ttl: Optional[float] = None) -> None:
    """Extend the TTL of the lease named ``name`` to ``ttl`` seconds from now."""
    registry().renew_name(name, ttl)


def release(port: int) -> builtins.list[int]:
    """Release the lease holding ``port`` (all its ports); returns the ports freed.

    NotFound when no live lease holds it; NotOwner when a live process other than this
    one holds it (unless that lease was kept or has a TTL). For a port this process took
    with :func:`free_port` or :func:`bound_socket`, only that lease is released: if it
    is gone already (released elsewhere, TTL ended), NotFound, and the port's new holder
    is left alone.
    """
    return registry().release(port)


def release_name(name: str) -> builtins.list[int]:
    """Release the live lease named ``name``; returns the ports freed."""
    return registry().release_name(name)


def renew(port: int, ttl: Optional[float] = None) -> None:
    """Extend the TTL of the lease holding ``port`` to ``ttl`` seconds from now."""
    registry().renew(port, ttl)


def release_id(id: int) -> builtins.list[int]:
    """Release lease ``id`` (``Lease.id``, ``LeaseInfo.lease_id``; all its ports); returns
    the ports freed. NotFound for an unknown or already-released id."""
    return registry().release_id(id)


def renew_id(id: int, ttl: Optional[float] = None) -> None:
    """Extend the TTL of lease ``id`` to ``ttl`` seconds from now (its own TTL when None).
    NotFound for an unknown, released or expired id."""
    registry().renew_id(id, ttl)


def bound_socket(**options: Unpack[_BoundSocketOptions]) -> socket.socket:
    """A ``socket.socket`` bound (TCP: and listening) on a registry-held port.

    The only race-free hand-over: no other program can take the port. The port stays
    held in the registry until ``portmgr.release(sock.getsockname()[1])`` or until the
    process exits.
    """
    return registry().bound_socket(**options)


def bound_sockets(
    addresses: Optional[Sequence[str]] = None,
    proto: Proto = "tcp",
    reuse_port: bool = False,
    workers: int = 1,
    *,
    reuse_addr: bool = False,
    ipv6_only: Optional[bool] = None,
    backlog: int = 1024,
    **options: Any,
) -> tuple[Lease, builtins.list[socket.socket]]:
    """One registry-held port, bound on every address of ``addresses`` at once (default:
    the dual-stack wildcard): a listener set, all or nothing::

        lease, socks = portmgr.bound_sockets(addresses=["127.0.0.1", "::1"])
        # one port; a "localhost" server that answers on both

    ``proto`` "tcp", "udp" or "both"; ``reuse_port`` with ``workers`` N gives N sockets
    per address and protocol (SO_REUSEPORT: the kernel spreads connections over them);
    ``reuse_addr``, ``ipv6_only``, ``backlog`` as their socket options; other options as
    :func:`allocate` (``range``, ``name``, ``preferred``, ``ttl``...). The sockets are
    close-on-exec; the lease is released by ``lease.release()`` or when the process exits
    (closing the sockets does not release it).
    """
    return registry().bound_sockets(
        addresses=None if addresses is None else list(addresses),
        proto=proto,
        reuse_port=reuse_port,
        workers=workers,
        reuse_addr=reuse_addr,
        ipv6_only=ipv6_only,
        backlog=backlog,
        **options,
    )


def unix_socket_path(name: Optional[str] = None) -> UnixSocketPath:
    """A fresh Unix-socket path for ``name`` in the registry's private (0700) sockets
    directory, where a TCP port is not needed ("zero-port mode")::

        with portmgr.unix_socket_path("db") as p:
            start_postgres(unix_socket=p.path)

    Held for this process: removed on ``release()``, at the end of the ``with`` block,
    or (by whoever asks next) once this process is gone. Nothing is bound there.
    """
    return registry().unix_socket_path(name)


def bound_unix_socket(name: Optional[str] = None) -> tuple[UnixSocketPath, socket.socket]:
    """:func:`unix_socket_path`, bound: the path and a listening ``AF_UNIX`` socket there."""
    return registry().bound_unix_socket(name)


def leases() -> builtins.list[LeaseInfo]:
    """Every live port of the default registry, ascending (``portmgr list``)."""
    return registry().list()


def get_by_name(name: str) -> builtins.list[LeaseInfo]:
    """The live ports named ``name`` (empty when none)."""
    return registry().get_by_name(name)


def get_by_port(port: int) -> Optional[LeaseInfo]:
    """The live lease of ``port``, or None."""
    return registry().get_by_port(port)


def stats() -> Stats:
    """Pool size, held, free, utilization, live owners and lifetime counters."""
    return registry().stats()


def reserve(ports: SpansLike, reason: Optional[str] = None) -> builtins.list[LeaseInfo]:
    """Reserve ports registry-wide, for every process and language on the host::

        portmgr.reserve([9100, (9200, 9299)], reason="monitoring")

    No strategy hands them out until :func:`unreserve`; ``allocate(preferred=9100,
    required=True)`` raises PortInUse naming the reservation and its reason. A port
    leased right now keeps its lease (those leases are returned) and is blocked once
    released.
    """
    return registry().reserve(ports, reason)


def unreserve(ports: SpansLike) -> builtins.list[ReservedRange]:
    """Unreserve ports (a partly covered reservation keeps its other ports); returns the
    parts freed. NotFound when none of them was reserved."""
    return registry().unreserve(ports)


def reserved() -> builtins.list[ReservedRange]:
    """Every reservation of the default registry (``portmgr reserved list``)."""
    return registry().reserved()


def gc() -> builtins.list[LeaseInfo]:
    """Drop every dead or expired record of the default registry; returns what was freed."""
    return registry().gc()


def health(threshold: float = 0.9) -> Health:
    """The health report of the default registry (``portmgr health``), decided by the
    core: every range in use (the default pool, every service type range and every
    explicit range with leases) and the problems found. ``Health.ok`` is False when
    there is any; each :class:`Problem` has ``kind`` ("exhausted" when a range is at
    least ``threshold`` full, "bound_elsewhere", "expired", "owner_gone", "damaged"),
    ``range``, ``service_type`` and ``message``."""
    return services().health(threshold)


def health_history() -> builtins.list[HealthEntry]:
    """The recorded health checks of the default registry, oldest first (the last 256;
    recorded by :class:`HealthMonitor`, ``portmgr health --watch`` and ``portmgr
    serve``; ``portmgr health --history``). Each :class:`HealthEntry` has ``seq``,
    ``time`` (seconds since the epoch), ``ok``, ``held``, ``problem_count``,
    ``problems`` (:class:`HistoryProblem`: ``kind``, ``range``, ``port``, ``message``) and
    ``changed`` (its state differs from the entry before)."""
    return services().health_history()


_monitors: "weakref.WeakSet[_native.HealthMonitor]" = weakref.WeakSet()


@atexit.register
def _stop_monitors() -> None:
    # Before the interpreter finalizes: a monitor thread must not call back into it then.
    for m in builtins.list(_monitors):
        m.stop()


class HealthMonitor:
    """The core's health monitor: a background thread that runs the health check every
    ``interval`` seconds, records each result in the registry's health history (see
    :func:`health_history`) and calls ``callback(entry)`` with the :class:`HealthEntry`
    (``entry.changed``: its state differs from the monitor's previous check; the first
    check, at once, is a change). An exception in the callback is reported as
    unraisable and the monitor goes on.

    Stop it with :meth:`stop` (it waits for the thread), or use it as a context manager::

        with portmgr.HealthMonitor(10.0, lambda e: e.changed and print(e)):
            run_the_tests()
    """

    def __init__(
        self,
        interval: float,
        callback: Optional[Callable[[HealthEntry], Any]] = None,
        *,
        threshold: float = 0.9,
        services: Optional[Services] = None,
    ) -> None:
        svc = services if services is not None else _services()
        self._m = _native.HealthMonitor(svc, interval, callback, threshold)
        _monitors.add(self._m)

    def stop(self) -> None:
        """Stop the monitor and wait for its thread; stopping twice is harmless."""
        self._m.stop()

    @property
    def running(self) -> bool:
        """Whether the monitor's thread runs."""
        return self._m.running

    @property
    def checks(self) -> int:
        """How many checks ran so far."""
        return self._m.checks

    @property
    def interval(self) -> float:
        """The interval, in seconds."""
        return self._m.interval

    @property
    def last_error(self) -> Optional[str]:
        """The last error recording a check in the history, or None."""
        return self._m.last_error

    def __enter__(self) -> "HealthMonitor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"HealthMonitor(interval={self.interval}, running={self.running}, checks={self.checks})"


# ---------------------------------------------------------------------------------------
# Named services, types, groups, export and import: each a call into portmgr::mapping.


def overview() -> dict[str, Any]:
    """Everything at once (``portmgr overview --json``)::

        {"services": {"web": Service(...)},     # every live named service
         "ports": {15123: "web"},               # port -> name
         "by_type": {"rest-api": ["web"]},      # names by service type
         "stats": stats_full()}
    """
    return services().overview()


def stats_full() -> dict[str, Any]:
    """The statistics of ``portmgr stats --json``: :func:`stats`' figures, ``ranges``
    (every range in use) and ``types`` (per service type: ``total``, ``active``,
    ``expired``, ``reserved``, ``size``, ``utilization``)."""
    return services().stats_full()


def services() -> Services:
    """The mapping layer (:class:`Services`) on the default registry. The service types
    config (``$PORTMGR_TYPES``, else ``~/.config/portmgr/types.json``) is read at each
    call; ``Services(Registry(path), types=FILE)`` for another registry or config."""
    return Services(registry())


# The module function, for HealthMonitor, whose keyword `services` hides it.
_services = services


def get_or_allocate_service(
    name: str,
    *,
    type: Optional[str] = None,
    metadata: Optional[_Mapping[str, str]] = None,
    proto: Proto = "tcp",
    count: int = 1,
    contiguous: bool = False,
    range: Optional[RangeLike] = None,
    strategy: StrategyName = "random",
    ttl: Optional[float] = None,
) -> tuple[Service, Optional[Lease]]:
    """The live service ``name`` if there is one: ``(service, None)`` (possibly another
    process's; its type and metadata are left as they are); else allocate it as
    :func:`allocate` does: ``(service, lease)``."""
    return services().get_or_allocate(
        name,
        type=type,
        metadata=None if metadata is None else dict(metadata),
        proto=proto,
        count=count,
        contiguous=contiguous,
        range=range,
        strategy=strategy,
        ttl=ttl,
    )


def list_services() -> builtins.list[Service]:
    """Every live lease as a :class:`Service` (one per lease, with its type, group and
    metadata), by first port."""
    return services().list()


def get_service(name: str) -> Optional[Service]:
    """The live service ``name``, or None."""
    return services().by_name(name)


def get_service_by_port(port: int) -> Optional[Service]:
    """The live service holding ``port``, or None."""
    return services().by_port(port)


def services_by_type(type: str) -> builtins.list[Service]:
    """The live services of ``type`` (InvalidArgument for an unknown type)."""
    return services().by_type(type)


def services_by_group(group: str) -> builtins.list[Service]:
    """The live members of ``group``."""
    return services().by_group(group)


def update_metadata(
    name: str, set: Optional[_Mapping[str, str]] = None, *, remove: Sequence[str] = ()
) -> Service:
    """Change the metadata of the live service ``name``: ``set`` entries added or
    replaced, ``remove`` keys removed; returns the service as it now is."""
    return services().update_metadata(
        name, None if set is None else dict(set), remove=builtins.list(remove)
    )


def service_types() -> builtins.list[ServiceType]:
    """Every service type in force (built-in table plus the config file), by name."""
    return services().types()


def allocate_group(
    name: str,
    layout: Union[str, _Mapping[str, Union[int, tuple[int, Optional[str]]]], None] = None,
    *,
    metadata: Optional[_Mapping[str, str]] = None,
    range: Optional[RangeLike] = None,
    strategy: StrategyName = "random",
    max_attempts: int = 2000,
    proto: Proto = "tcp",
    ttl: Optional[float] = None,
    watch_pid: Optional[int] = None,
) -> Group:
    """Allocate group ``name``: one base where every member port (base + offset) is
    free, all members or none. Members are services named ``NAME.MEMBER``.

    layout:  member name to offset (or ``(offset, type)``), a spec string
             ``"postgres=0,redis=+100/cache"``, or a layout name from the types config
             (default: the built-in ``"stack"``).
    range:   where member ports may lie (default: the pool); bases are tried in
             ``strategy`` order ("random" spreads parallel CI jobs apart).

    The :class:`Group` is not released by garbage collection: call ``release()``, use
    it as a context manager, call :func:`release_group`, or let the process exit.
    """
    return services().allocate_group(
        name,
        layout,
        metadata=None if metadata is None else dict(metadata),
        range=range,
        strategy=strategy,
        max_attempts=max_attempts,
        proto=proto,
        ttl=ttl,
        watch_pid=watch_pid,
    )


def release_group(name: str) -> builtins.list[int]:
    """Release every live member of group ``name`` (NotFound when none); returns the
    ports freed."""
    return services().release_group(name)


def export(format: Literal["json", "env", "nginx"] = "json") -> str:
    """The live named services as JSON (``{"portmgr_export": 1, "services": [...]}``),
    ``.env`` (``NAME_PORT=1234`` lines) or nginx ``location`` blocks."""
    return services().export(format)


def write_nginx_dir(dir: Union[str, os.PathLike[str]]) -> NginxApplied:
    """Write the nginx export to ``dir``, one ``NAME.conf`` per service, swapped in
    atomically; nginx is neither tested nor reloaded (see :func:`apply_nginx`)."""
    return services().write_nginx_dir(dir)


def apply_nginx(
    dir: Union[str, os.PathLike[str]],
    *,
    test_command: Optional[Sequence[str]] = None,
    reload_command: Optional[Sequence[str]] = None,
) -> NginxApplied:
    """Write ``dir`` as :func:`write_nginx_dir` does, run ``test_command`` (default
    ``nginx -t``) and only when it passes ``reload_command`` (default
    ``nginx -s reload``); if either fails, the previous directory is restored and the
    error carries nginx's output. An empty command skips that step."""
    return services().apply_nginx(
        dir,
        test_command=None if test_command is None else builtins.list(test_command),
        reload_command=None if reload_command is None else builtins.list(reload_command),
    )


def import_services(
    path: Union[str, os.PathLike[str], None] = None,
    *,
    text: Optional[str] = None,
    format: Optional[Literal["json", "env"]] = None,
    range: Optional[RangeLike] = None,
    ttl: Optional[float] = None,
    watch_pid: Optional[int] = None,
) -> ImportReport:
    """Re-create services from a JSON export or a ``.env`` file (``path``, or the
    ``text`` itself). Each name asks for its previous port first; one whose port is
    taken falls back to ``range`` (else its type's range, else the pool) and is reported
    as "moved"; a live name is left as it is ("existing"); failures are reported
    ("failed", with the reason), not raised. The new leases are ``report.leases``."""
    return services().import_services(
        path, text=text, format=format, range=range, ttl=ttl, watch_pid=watch_pid
    )


def _cli(argv: Optional[Iterable[str]] = None) -> int:
    """Run the ``portmgr`` command line (the Rust code the cargo binary runs)."""
    args = builtins.list(sys.argv[1:] if argv is None else argv)
    return _native.cli_main(["portmgr", *args])
