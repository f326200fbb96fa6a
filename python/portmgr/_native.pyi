"""The Rust extension behind :mod:`portmgr`. Use the names re-exported by ``portmgr``.

Every call that can block (the registry lock, probes, connects, name resolution)
releases the GIL. Errors are subclasses of :class:`portmgr.errors.PortError`.
"""

import builtins
import os
import socket
from collections.abc import Mapping as _Mapping
from typing import Any, Callable, Iterable, Literal, Optional, Sequence, Union, final

from typing_extensions import Self

__all__ = [
    "__version__",
    "Endpoint",
    "Resolver",
    "stun_external_address",
    "Mapping",
    "nat_map",
    "nat_unmap",
    "Registry",
    "Lease",
    "UnixSocketPath",
    "LeaseInfo",
    "Stats",
    "ReservedRange",
    "Reservation",
    "Services",
    "Service",
    "ServiceType",
    "Group",
    "GroupMember",
    "ImportReport",
    "ImportedService",
    "NginxApplied",
    "Health",
    "Problem",
    "RangeUse",
    "is_free",
    "scan",
    "wait_listening",
    "wait_free",
    "reachable",
    "first_reachable",
    "FirstReachable",
    "Candidate",
    "HealthMonitor",
    "HealthEntry",
    "HistoryProblem",
    "default_dir",
    "default_pool",
    "cli_main",
    "_after_fork_child",
]
__version__: str

_Proto = Literal["tcp", "udp", "both"]
_StrategyName = Literal["sequential", "random", "hash", "kernel"]
_RangeLike = Union[tuple[int, int], str, range]
_SpanLike = Union[int, tuple[int, int], str]
_SpansLike = Union[_SpanLike, Iterable[_SpanLike]]
_Metadata = dict[str, str]
_MetadataLike = _Mapping[str, str]

@final
class Lease:
    """Ports held in the registry.

    Not released by garbage collection (``portmgr.allocate().port`` is fine): released
    by :meth:`release`, by leaving its ``with`` block, or when the process exits.
    """

    @property
    def port(self) -> int:
        """The (first) port."""
    @property
    def ports(self) -> builtins.list[int]:
        """All the ports, ascending for a contiguous block."""
    @property
    def name(self) -> Optional[str]:
        """The service name, if any."""
    @property
    def id(self) -> int:
        """The lease id, shared by all its ports in the registry views."""
    @property
    def port_map(self) -> Optional[dict[int, int]]:
        """For a module allocated with ``internal_ports``: internal port -> its external
        port; None otherwise."""
    @property
    def released(self) -> bool:
        """Whether :meth:`release` or :meth:`keep` was called."""
    def release(self) -> None:
        """Release the ports now. Idempotent. In a forked child a lease inherited from
        the parent is the parent's: releasing it there does nothing."""
    def renew(self, ttl: float) -> None:
        """Give the lease a time to live of ``ttl`` seconds from now (at least 1 s); it
        then lives by its TTL (renew it before it ends), no longer by this process.
        Acts on this lease only: NotFound after :meth:`release` or once it is gone (the
        port's next holder is left alone); nothing in a forked child."""
    def keep(self) -> builtins.list[int]:
        """Stop managing the lease from this object: held until the process exits (or
        its TTL or watched process ends); any process of the user may release it.
        NotFound after :meth:`release`."""
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        *_exc: object,
    ) -> bool: ...
    def __int__(self) -> int: ...

@final
class UnixSocketPath:
    """A Unix-socket path held for this process; removed on :meth:`release`, at the end
    of its ``with`` block, or once this process is gone."""

    @property
    def path(self) -> str: ...
    @property
    def released(self) -> bool: ...
    def release(self) -> None:
        """Remove the path (and any socket file there) now. Idempotent."""
    def keep(self) -> str:
        """Keep the path past this object (cleaned once this process is gone)."""
    def __fspath__(self) -> str: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, *_exc: object) -> bool: ...

@final
class LeaseInfo:
    """One live port of the registry, as the views show it."""

    @property
    def port(self) -> int: ...
    @property
    def protocols(self) -> str:
        """"tcp", "udp" or "both"."""
    @property
    def name(self) -> Optional[str]: ...
    @property
    def lease_id(self) -> int: ...
    @property
    def owner_pid(self) -> int: ...
    @property
    def created_ms(self) -> int:
        """When it was allocated, milliseconds since the Unix epoch."""
    @property
    def expires_ms(self) -> Optional[int]:
        """When its TTL ends, milliseconds since the Unix epoch; None without a TTL."""
    @property
    def watch_pid(self) -> Optional[int]: ...
    @property
    def detached(self) -> bool:
        """Kept or detached: any process of the user may release it."""
    @property
    def bound(self) -> bool:
        """Handed out as a bound socket."""
    @property
    def state(self) -> str:
        """"held", "pending", "expired" or "owner gone"."""

@final
class Stats:
    """Registry figures."""

    @property
    def pool(self) -> str: ...
    @property
    def pool_size(self) -> int: ...
    @property
    def held(self) -> int: ...
    @property
    def held_in_pool(self) -> int: ...
    @property
    def reserved(self) -> int:
        """Ports of the registry's reservations, all ranges."""
    @property
    def reserved_in_pool(self) -> int:
        """Reserved ports inside the default pool that are not held."""
    @property
    def free(self) -> int: ...
    @property
    def utilization(self) -> float: ...
    @property
    def owners(self) -> int: ...
    @property
    def allocations(self) -> int: ...
    @property
    def releases(self) -> int: ...
    @property
    def reclaimed(self) -> int: ...

@final
class Registry:
    """A handle on one registry directory: ``path`` None means the default one
    (``$PORTMGR_DIR``, else ``$XDG_RUNTIME_DIR/portmgr``, else a per-user temp dir)."""

    def __new__(cls, path: Optional[Union[str, os.PathLike[str]]] = None, *, lock_timeout: Optional[float] = None) -> Self: ...
    @property
    def path(self) -> str:
        """The registry's directory."""
    @property
    def default_pool(self) -> tuple[int, int]:
        """The pool drawn from when no range is given, inclusive."""
    def set_lock_timeout(self, seconds: float) -> None:
        """How long calls wait for the registry lock before LockTimeout."""
    def allocate(
        self,
        *,
        proto: _Proto = "tcp",
        count: int = 1,
        contiguous: bool = False,
        range: Optional[_RangeLike] = None,
        strategy: _StrategyName = "random",
        name: Optional[str] = None,
        preferred: Optional[int] = None,
        required: bool = False,
        ttl: Optional[float] = None,
        watch_pid: Optional[int] = None,
        host: Optional[str] = None,
        key: Optional[str] = None,
        exclude: Optional[_SpansLike] = None,
        type: Optional[str] = None,
        metadata: Optional[_MetadataLike] = None,
        internal_ports: Optional[Sequence[int]] = None,
    ) -> Lease:
        """Allocate ports; see :func:`portmgr.allocate`. With ``type`` or ``metadata``, a
        typed service (the core decides the path)."""
    def allocate_bound(
        self,
        *,
        proto: _Proto = "tcp",
        count: int = 1,
        contiguous: bool = False,
        range: Optional[_RangeLike] = None,
        strategy: _StrategyName = "random",
        name: Optional[str] = None,
        preferred: Optional[int] = None,
        required: bool = False,
        ttl: Optional[float] = None,
        watch_pid: Optional[int] = None,
        host: Optional[str] = None,
        key: Optional[str] = None,
        exclude: Optional[_SpansLike] = None,
        type: Optional[str] = None,
        metadata: Optional[_MetadataLike] = None,
        internal_ports: Optional[Sequence[int]] = None,
    ) -> tuple[Lease, builtins.list[socket.socket]]:
        """Allocate ports and hand them over bound: a listening TCP socket and/or a
        bound UDP socket per port (TCP first)."""
    def free_port(
        self,
        *,
        proto: _Proto = "tcp",
        range: Optional[_RangeLike] = None,
        strategy: _StrategyName = "random",
        name: Optional[str] = None,
        preferred: Optional[int] = None,
        required: bool = False,
        ttl: Optional[float] = None,
        watch_pid: Optional[int] = None,
        host: Optional[str] = None,
        key: Optional[str] = None,
        exclude: Optional[_SpansLike] = None,
    ) -> int:
        """One port, held until :meth:`release` or until this process exits."""
    def bound_socket(
        self,
        *,
        proto: Literal["tcp", "udp"] = "tcp",
        range: Optional[_RangeLike] = None,
        strategy: _StrategyName = "random",
        name: Optional[str] = None,
        preferred: Optional[int] = None,
        required: bool = False,
        ttl: Optional[float] = None,
        watch_pid: Optional[int] = None,
        host: Optional[str] = None,
        key: Optional[str] = None,
        exclude: Optional[_SpansLike] = None,
    ) -> socket.socket:
        """A socket bound (TCP: and listening) on a registry-held port, held until
        :meth:`release` or until this process exits."""
    def get_or_allocate(
        self,
        name: str,
        *,
        proto: _Proto = "tcp",
        count: int = 1,
        contiguous: bool = False,
        range: Optional[_RangeLike] = None,
        strategy: _StrategyName = "random",
        preferred: Optional[int] = None,
        required: bool = False,
        ttl: Optional[float] = None,
        watch_pid: Optional[int] = None,
        host: Optional[str] = None,
        key: Optional[str] = None,
        exclude: Optional[_SpansLike] = None,
    ) -> Union[Lease, builtins.list[LeaseInfo]]:
        """The live lease named ``name`` (as LeaseInfo rows) if there is one, else a new
        :class:`Lease` allocated with these options."""
    def bound_sockets(
        self,
        *,
        addresses: Optional[builtins.list[str]] = None,
        reuse_addr: bool = False,
        reuse_port: bool = False,
        workers: int = 1,
        ipv6_only: Optional[bool] = None,
        backlog: int = 1024,
        proto: _Proto = "tcp",
        count: int = 1,
        contiguous: bool = False,
        range: Optional[_RangeLike] = None,
        strategy: _StrategyName = "random",
        name: Optional[str] = None,
        preferred: Optional[int] = None,
        required: bool = False,
        ttl: Optional[float] = None,
        watch_pid: Optional[int] = None,
        key: Optional[str] = None,
        exclude: Optional[_SpansLike] = None,
    ) -> tuple[Lease, builtins.list[socket.socket]]:
        """A listener set: one port bound on every address; see :func:`portmgr.bound_sockets`."""
    def unix_socket_path(self, name: Optional[str] = None) -> UnixSocketPath:
        """A fresh Unix-socket path; see :func:`portmgr.unix_socket_path`."""
    def bound_unix_socket(self, name: Optional[str] = None) -> tuple[UnixSocketPath, socket.socket]:
        """A fresh Unix-socket path, bound and listening."""
    def release(self, port: int) -> builtins.list[int]:
        """Release the lease that holds ``port``; returns the ports freed. For a port
        this process took with free_port/bound_socket: that lease only (NotFound if it
        is gone, leaving the port's new holder alone)."""
    def release_name(self, name: str) -> builtins.list[int]:
        """Release the live lease named ``name``; returns the ports freed."""
    def release_id(self, id: int) -> builtins.list[int]:
        """Release lease ``id`` (:attr:`Lease.id`, :attr:`LeaseInfo.lease_id`; all its
        ports); returns the ports freed. NotFound for an unknown or already-released id."""
    def renew(self, port: int, ttl: Optional[float] = None) -> None:
        """Extend the TTL of the lease holding ``port`` (its own TTL when None)."""
    def renew_id(self, id: int, ttl: Optional[float] = None) -> None:
        """Extend the TTL of lease ``id`` (its own TTL when None). NotFound for an unknown,
        released or expired id."""
    def renew_name(self, name: str, ttl: Optional[float] = None) -> None:
        """Extend the TTL of the lease named ``name``."""
    def list(self) -> builtins.list[LeaseInfo]:
        """Every live port, ascending."""
    def get_by_name(self, name: str) -> builtins.list[LeaseInfo]:
        """The live ports named ``name`` (empty when none)."""
    def get_by_port(self, port: int) -> Optional[LeaseInfo]:
        """The live lease of ``port``, or None."""
    def gc(self) -> builtins.list[LeaseInfo]:
        """Drop every dead or expired record; returns what was freed."""
    def stats(self) -> Stats:
        """Pool size, held, free, utilization, live owners, lifetime counters."""
    def reserve(self, ports: _SpansLike, reason: Optional[str] = None) -> builtins.list[LeaseInfo]:
        """Reserve ports registry-wide (``9100``, ``(9200, 9299)``, ``"9100,9200-9299"``
        or a list of those): no process or language is handed them until
        :meth:`unreserve`. Returns the live leases inside them, which keep their ports."""
    def unreserve(self, ports: _SpansLike) -> builtins.list[ReservedRange]:
        """Unreserve ports; returns the parts freed (NotFound when none was reserved)."""
    def reserved(self) -> builtins.list[ReservedRange]:
        """Every reservation, in the order they were made."""
    def notices(self) -> builtins.list[str]:
        """Things the registry did on its own that a person should know of."""

@final
class ReservedRange:
    """A registry-wide reservation: the ports ``start..end`` (inclusive) are never
    handed out."""

    @property
    def start(self) -> int: ...
    @property
    def end(self) -> int: ...
    @property
    def reason(self) -> Optional[str]: ...
    @property
    def created_ms(self) -> int: ...
    def __contains__(self, port: int, /) -> bool: ...
    def __eq__(self, other: object, /) -> bool: ...
    __hash__: None  # type: ignore[assignment]

@final
class Reservation:
    """An in-process set of reserved ports over a range (no shared state: another
    process can be handed the same port; use the registry for that)."""

    def __new__(cls, range: Optional[_RangeLike] = None, *, strategy: _StrategyName = "random") -> Self: ...
    @property
    def range(self) -> tuple[int, int]: ...
    def reserve_port(self) -> int:
        """One port free for TCP and UDP now, not reserved here; PortsExhausted when none."""
    def reserve_ports(self, n: int) -> builtins.list[int]:
        """Up to ``n`` ports; fewer (possibly none) when the range runs out."""
    def release_port(self, port: int) -> bool: ...
    def release_ports(self, ports: builtins.list[int]) -> int: ...
    def clear(self) -> int:
        """Give every port back; returns how many were reserved."""
    def is_reserved(self, port: int) -> bool: ...
    def __contains__(self, port: int, /) -> bool: ...
    def __len__(self) -> int: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, *_exc: object) -> bool: ...

@final
class Service:
    """One live lease as the mapping views show it (one per lease, not per port)."""

    @property
    def name(self) -> Optional[str]:
        """The service name (None for an unnamed lease)."""
    @property
    def port(self) -> int:
        """The first port."""
    @property
    def ports(self) -> builtins.list[int]:
        """All its ports, ascending."""
    @property
    def protocols(self) -> str:
        """"tcp", "udp" or "both"."""
    @property
    def type(self) -> Optional[str]:
        """Its service type, if any."""
    @property
    def group(self) -> Optional[str]:
        """The group it belongs to, if any."""
    @property
    def member(self) -> Optional[str]:
        """Its member name in the group, if any."""
    @property
    def metadata(self) -> dict[str, str]:
        """Its metadata (a new dict at each access)."""
    @property
    def lease_id(self) -> int: ...
    @property
    def owner_pid(self) -> int: ...
    @property
    def expires_ms(self) -> Optional[int]:
        """When its TTL ends, milliseconds since the Unix epoch; None without a TTL."""
    @property
    def state(self) -> str:
        """"held" or "pending"."""
    @property
    def port_map(self) -> Optional[dict[int, int]]:
        """For a module: internal port -> external port (a new dict at each access)."""

@final
class ServiceType:
    """A service type: a name and the range its services are drawn from."""

    @property
    def name(self) -> str: ...
    @property
    def range(self) -> Optional[tuple[int, int]]:
        """Inclusive; None means the registry's default pool."""
    @property
    def description(self) -> str: ...
    @property
    def source(self) -> str:
        """"builtin" or the config file it came from."""

@final
class GroupMember:
    """One member of an allocated group."""

    @property
    def member(self) -> str:
        """Its name in the layout ("redis")."""
    @property
    def name(self) -> str:
        """Its service name ("ci-17.redis")."""
    @property
    def offset(self) -> int: ...
    @property
    def port(self) -> int: ...
    @property
    def type(self) -> Optional[str]: ...

@final
class Group:
    """An allocated group: every member's port, taken together. Not released by garbage
    collection: by :meth:`release`, by leaving its ``with`` block, or at process exit."""

    @property
    def name(self) -> str: ...
    @property
    def base(self) -> int:
        """The base port (member ports are base + offset)."""
    @property
    def members(self) -> builtins.list[GroupMember]:
        """The members, in layout order."""
    @property
    def ports(self) -> dict[str, int]:
        """Member name to port, in layout order."""
    @property
    def released(self) -> bool:
        """Whether :meth:`release` or :meth:`keep` was called."""
    def release(self) -> None:
        """Release every member now. Idempotent."""
    def keep(self) -> dict[str, int]:
        """Stop managing the members from this object (held until the process exits;
        any process of the user may release them). Returns member name to port.
        NotFound after :meth:`release`."""
    def __getitem__(self, member: str, /) -> int: ...
    def __contains__(self, member: str, /) -> bool: ...
    def __len__(self) -> int: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, *_exc: object) -> bool: ...

@final
class ImportedService:
    """What an import did with one service."""

    @property
    def name(self) -> str: ...
    @property
    def previous_port(self) -> int:
        """The port it had in the file."""
    @property
    def port(self) -> Optional[int]:
        """The port it has now (None when it failed)."""
    @property
    def status(self) -> str:
        """"same", "moved", "existing" or "failed"."""
    @property
    def reason(self) -> Optional[str]:
        """Why it moved or failed."""
    @property
    def type(self) -> Optional[str]: ...

@final
class ImportReport:
    """What an import did; the new leases are not released by garbage collection."""

    @property
    def services(self) -> builtins.list[ImportedService]:
        """One per entry of the file, in file order."""
    @property
    def moved(self) -> builtins.list[ImportedService]:
        """The services that did not get their previous port."""
    @property
    def failed(self) -> builtins.list[ImportedService]:
        """The services that could not be re-created."""
    @property
    def leases(self) -> builtins.list[Lease]:
        """The leases created (not those already live)."""
    def release(self) -> None:
        """Release every lease the import created. Idempotent."""
    def keep(self) -> builtins.list[int]:
        """Keep every lease the import created; returns their ports."""
    def __enter__(self) -> Self: ...
    def __exit__(self, *_exc: object) -> bool: ...

@final
class NginxApplied:
    """What writing (and applying) the nginx export did."""

    @property
    def dir(self) -> str: ...
    @property
    def files(self) -> builtins.list[str]:
        """The files written (one per service), sorted."""
    @property
    def removed(self) -> builtins.list[str]:
        """Files of an earlier export removed (their services are gone), sorted."""
    @property
    def skipped(self) -> builtins.list[str]:
        """Services left out, and why."""
    @property
    def tested(self) -> bool: ...
    @property
    def reloaded(self) -> bool: ...

@final
class Problem:
    """One problem of the health report, with a message that says what to do."""

    @property
    def kind(self) -> str:
        """"exhausted", "bound_elsewhere", "expired", "owner_gone" or "damaged"."""
    @property
    def range(self) -> Optional[tuple[int, int]]:
        """The range concerned (exhausted), inclusive."""
    @property
    def service_type(self) -> Optional[str]:
        """The service type whose range it is (exhausted of a type's range)."""
    @property
    def port(self) -> Optional[int]:
        """The port concerned (every kind but exhausted)."""
    @property
    def pids(self) -> builtins.list[int]:
        """The processes bound to the port outside its lease (bound_elsewhere)."""
    @property
    def lease(self) -> Optional[LeaseInfo]:
        """The lease concerned, as the registry shows it."""
    @property
    def message(self) -> str: ...

@final
class RangeUse:
    """One range in use and how full it is."""

    @property
    def kind(self) -> str:
        """"pool", "type" or "explicit"."""
    @property
    def range(self) -> tuple[int, int]:
        """Inclusive."""
    @property
    def service_type(self) -> Optional[str]: ...
    @property
    def size(self) -> int: ...
    @property
    def held(self) -> int: ...
    @property
    def reserved(self) -> int:
        """Ports in it that reservations block and no lease holds."""
    @property
    def utilization(self) -> float:
        """(held + reserved) / size, 0 to 1."""

@final
class Health:
    """The health report over every range in use."""

    @property
    def ok(self) -> bool:
        """No problems."""
    @property
    def threshold(self) -> float: ...
    @property
    def held(self) -> int:
        """Live ports in the registry, all ranges."""
    @property
    def reserved(self) -> int:
        """Ports the registry's reservations block, all ranges."""
    @property
    def ranges(self) -> builtins.list[RangeUse]:
        """Every range in use: the pool first."""
    @property
    def problems(self) -> builtins.list[Problem]: ...

_Layout = Union[str, _Mapping[str, Union[int, tuple[int, Optional[str]]]]]

@final
class Services:
    """The mapping layer on one registry (the default one when ``registry`` is None):
    named services with types and metadata, groups, export and import. The service
    types config (``types``, else ``$PORTMGR_TYPES``, else
    ``~/.config/portmgr/types.json``) is read at each call."""

    def __new__(
        cls, registry: Optional[Registry] = None, *, types: Optional[Union[str, os.PathLike[str]]] = None
    ) -> Self: ...
    @property
    def path(self) -> str:
        """The registry's directory."""
    def types(self) -> builtins.list[ServiceType]:
        """Every service type in force, sorted by name."""
    def layouts(self) -> builtins.list[str]:
        """The group layout names in force (built in: "stack")."""
    def allocate(
        self,
        *,
        proto: _Proto = "tcp",
        count: int = 1,
        contiguous: bool = False,
        range: Optional[_RangeLike] = None,
        strategy: _StrategyName = "random",
        name: Optional[str] = None,
        preferred: Optional[int] = None,
        required: bool = False,
        ttl: Optional[float] = None,
        watch_pid: Optional[int] = None,
        host: Optional[str] = None,
        key: Optional[str] = None,
        exclude: Optional[_SpansLike] = None,
        type: Optional[str] = None,
        metadata: Optional[_MetadataLike] = None,
        internal_ports: Optional[Sequence[int]] = None,
    ) -> Lease:
        """Allocate as :meth:`Registry.allocate`, drawing from the range of ``type``
        when no ``range`` is given; record the type and ``metadata``."""
    def get_or_allocate(
        self,
        name: str,
        *,
        proto: _Proto = "tcp",
        count: int = 1,
        contiguous: bool = False,
        range: Optional[_RangeLike] = None,
        strategy: _StrategyName = "random",
        preferred: Optional[int] = None,
        required: bool = False,
        ttl: Optional[float] = None,
        watch_pid: Optional[int] = None,
        host: Optional[str] = None,
        key: Optional[str] = None,
        exclude: Optional[_SpansLike] = None,
        type: Optional[str] = None,
        metadata: Optional[_Metadata] = None,
    ) -> tuple[Service, Optional[Lease]]:
        """``(service, None)`` for a live ``name``, else ``(service, new_lease)``."""
    def list(self) -> builtins.list[Service]:
        """Every live lease, one Service each, by first port."""
    def list_named(self) -> builtins.list[Service]:
        """The live named services (what the exports show), by name."""
    def by_name(self, name: str) -> Optional[Service]: ...
    def by_port(self, port: int) -> Optional[Service]: ...
    def by_type(self, type: str) -> builtins.list[Service]:
        """The live services of ``type`` (InvalidArgument for an unknown type)."""
    def by_group(self, group: str) -> builtins.list[Service]: ...
    def update_metadata(
        self, name: str, set: Optional[_Metadata] = None, *, remove: Optional[builtins.list[str]] = None
    ) -> Service:
        """Add or replace ``set`` entries, remove ``remove`` keys; returns the service."""
    def allocate_group(
        self,
        group: str,
        layout: Optional[_Layout] = None,
        *,
        metadata: Optional[_Metadata] = None,
        range: Optional[_RangeLike] = None,
        strategy: _StrategyName = "random",
        max_attempts: int = 2000,
        proto: _Proto = "tcp",
        ttl: Optional[float] = None,
        watch_pid: Optional[int] = None,
    ) -> Group:
        """Every member port free at one base, all or none; see
        :func:`portmgr.allocate_group`."""
    def release_group(self, group: str) -> builtins.list[int]:
        """Release every live member of ``group``; returns the ports freed."""
    def export(self, format: str = "json") -> str:
        """The live named services as "json", "env" or "nginx" text."""
    def write_nginx_dir(self, dir: Union[str, os.PathLike[str]]) -> NginxApplied:
        """Write the nginx export to ``dir`` without testing or reloading nginx."""
    def apply_nginx(
        self,
        dir: Union[str, os.PathLike[str]],
        *,
        test_command: Optional[builtins.list[str]] = None,
        reload_command: Optional[builtins.list[str]] = None,
    ) -> NginxApplied:
        """Write ``dir``, test, reload; restore the previous directory on failure."""
    def import_services(
        self,
        path: Optional[Union[str, os.PathLike[str]]] = None,
        *,
        text: Optional[str] = None,
        format: Optional[str] = None,
        range: Optional[_RangeLike] = None,
        ttl: Optional[float] = None,
        watch_pid: Optional[int] = None,
    ) -> ImportReport:
        """Re-create services from a JSON export or .env file; see
        :func:`portmgr.import_services`."""
    def health(self, threshold: float = 0.9) -> Health:
        """The health report over every range in use; see :func:`portmgr.health`."""
    def health_history(self) -> builtins.list[HealthEntry]:
        """The recorded health checks, oldest first; see :func:`portmgr.health_history`."""
    def overview(self) -> dict[str, Any]:
        """Every live named service by name, ``ports`` (port -> name), ``by_type`` and
        ``stats``; see :func:`portmgr.overview`."""
    def stats_full(self) -> dict[str, Any]:
        """The statistics with every range in use and per-type counts; see
        :func:`portmgr.stats_full`."""

def is_free(port: int, proto: _Proto = "tcp", *, host: Optional[str] = None) -> bool:
    """Whether ``port`` can be bound for ``proto`` on every address (or on ``host``)."""

def scan(range: _RangeLike, proto: _Proto = "tcp") -> builtins.list[int]:
    """The ports of ``range`` in use for ``proto``, ascending."""

def wait_listening(port: int, *, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
    """Wait until something accepts TCP connections on ``host:port``; PortTimeout after
    ``timeout`` seconds."""

def wait_free(port: int, proto: _Proto = "tcp", *, timeout: float = 10.0) -> None:
    """Wait until ``port`` is free for ``proto``; PortTimeout after ``timeout`` seconds."""

def reachable(addrs: builtins.list[tuple[str, int]], *, timeout: float = 1.0) -> builtins.list[bool]:
    """For each ``(host, port)``, whether it accepts a TCP connection within ``timeout``."""

@final
class Candidate:
    """One candidate of :func:`first_reachable` and what its probe found."""

    @property
    def target(self) -> str:
        """The candidate as given (``"db.internal:5432"``)."""
    @property
    def host(self) -> str:
        """Its host, as written (brackets removed)."""
    @property
    def port(self) -> int: ...
    @property
    def address(self) -> Optional[str]:
        """The address that accepted, else the first tried; None when unresolved."""
    @property
    def outcome(self) -> Literal["reachable", "refused", "timed_out", "unresolvable", "unreachable"]: ...
    @property
    def elapsed(self) -> float:
        """How long its probe took, in seconds."""
    @property
    def error(self) -> Optional[str]: ...

@final
class FirstReachable:
    """The answer of :func:`first_reachable`; true when a candidate was reachable."""

    @property
    def reachable(self) -> Optional[str]:
        """The winner's target as given, or None."""
    @property
    def winner(self) -> Optional[int]:
        """The winner's index in the list given, or None."""
    @property
    def candidate(self) -> Optional[Candidate]:
        """The winning candidate, or None."""
    @property
    def candidates(self) -> builtins.list[Candidate]:
        """Every candidate, in the order given."""
    @property
    def elapsed(self) -> float:
        """How long the call took, in seconds."""
    def __bool__(self) -> bool: ...

def first_reachable(targets: builtins.list[str], timeout: float = 2.0) -> FirstReachable:
    """Probe ``targets`` (``"HOST:PORT"``, ``"[v6]:PORT"``), most preferred first, all at
    once with one ``timeout``; the first in that order that accepts a TCP connection, with
    every candidate's result."""

@final
class HistoryProblem:
    """One problem of a recorded health check."""

    @property
    def kind(self) -> str: ...
    @property
    def range(self) -> Optional[tuple[int, int]]: ...
    @property
    def port(self) -> Optional[int]: ...
    @property
    def message(self) -> str: ...

@final
class HealthEntry:
    """One recorded health check."""

    @property
    def seq(self) -> int: ...
    @property
    def time(self) -> float:
        """When the check ran, in seconds since the epoch."""
    @property
    def time_ms(self) -> int: ...
    @property
    def ok(self) -> bool: ...
    @property
    def held(self) -> int: ...
    @property
    def problem_count(self) -> int: ...
    @property
    def problems(self) -> builtins.list[HistoryProblem]:
        """The first 8 problems."""
    @property
    def changed(self) -> bool:
        """Its state differs from the check before."""

@final
class HealthMonitor:
    """The core's health monitor (wrapped by :class:`portmgr.HealthMonitor`)."""

    def __new__(
        cls,
        services: Services,
        interval: float,
        callback: Optional[Callable[[HealthEntry], Any]] = None,
        threshold: float = 0.9,
    ) -> Self: ...
    def stop(self) -> None: ...
    @property
    def running(self) -> bool: ...
    @property
    def checks(self) -> int: ...
    @property
    def last_error(self) -> Optional[str]: ...
    @property
    def interval(self) -> float: ...

def default_dir() -> str:
    """The default registry directory (``PORTMGR_DIR`` honoured; InvalidArgument when
    it is set but empty)."""

def default_pool() -> tuple[int, int]:
    """The default pool (``PORTMGR_RANGE`` honoured), inclusive."""

def cli_main(argv: builtins.list[str]) -> int:
    """Run the ``portmgr`` command line (``argv[0]`` is the program name); returns the
    exit status."""

def _after_fork_child() -> None: ...

@final
class Endpoint:
    """One address a name resolved to."""

    @property
    def address(self) -> str:
        """The IP address, as text."""
    @property
    def port(self) -> int: ...
    @property
    def target(self) -> str:
        """The host name the address belongs to (the SRV target, or the name's host)."""
    @property
    def priority(self) -> int:
        """The SRV priority (0 for an A/AAAA name)."""
    @property
    def weight(self) -> int:
        """The SRV weight (1 for an A/AAAA name)."""
    def __eq__(self, other: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class Resolver:
    """A caching DNS resolver with a pick policy (round-robin, weighted, priority)."""

    def __new__(
        cls,
        servers: Optional[Sequence[str]] = None,
        policy: Literal["round-robin", "weighted", "priority"] = "round-robin",
        *,
        min_ttl: float = 0.0,
        max_ttl: float = 86400.0,
        negative_ttl: float = 30.0,
        timeout: float = 2.0,
    ) -> Self: ...
    def resolve(self, name: str) -> builtins.list[Endpoint]:
        """Every endpoint of ``name`` (``HOST:PORT`` or ``_service._proto.domain``)."""
    def pick(self, name: str) -> Endpoint:
        """One endpoint of ``name``, chosen by the policy."""
    @property
    def policy(self) -> str: ...
    @property
    def queries(self) -> int:
        """How many DNS queries this resolver has sent."""
    def clear_cache(self) -> None:
        """Forget every cached answer."""

def stun_external_address(server: str, local_port: Optional[int] = None) -> tuple[str, int]:
    """This host's (address, port) as the STUN server ``server`` (``HOST:PORT``) sees it."""

@final
class Mapping:
    """A port mapping a gateway granted, tied to the lease that holds the port: renewed
    while the lease lives, deleted when it is released or expires."""

    @property
    def gateway(self) -> str: ...
    @property
    def protocol(self) -> str:
        """"tcp" or "udp"."""
    @property
    def method(self) -> str:
        """"natpmp" or "upnp": the gateway protocol that granted it."""
    @property
    def internal_port(self) -> int: ...
    @property
    def external_port(self) -> int: ...
    @property
    def lifetime(self) -> float:
        """Seconds the gateway keeps it unless renewed (the last grant)."""
    @property
    def lease_id(self) -> Optional[int]:
        """The lease it is tied to; None when no lease held the port."""
    @property
    def state(self) -> Literal["active", "lease_ended", "deleted"]: ...
    @property
    def renewals(self) -> int: ...
    @property
    def error(self) -> Optional[str]:
        """The last failure of a renewal or of the deletion after the lease ended."""
    def renew(self) -> None: ...
    def delete(self) -> None:
        """Delete it now (idempotent); raises when the gateway's deletion failed."""
    def wait_ended(self, timeout: Optional[float] = None) -> bool: ...
    def __enter__(self) -> "Mapping": ...
    def __exit__(self, *args: object) -> bool: ...

def nat_map(
    port: int,
    protocol: Literal["natpmp", "upnp", "auto"] = "auto",
    *,
    gateway: Optional[str] = None,
    lifetime: float = 3600.0,
    udp: bool = False,
    registry: Registry,
) -> Mapping:
    """Map ``port`` of this host on the gateway, tied to the lease in ``registry`` that holds it."""

def nat_unmap(
    port: int,
    protocol: Literal["natpmp", "upnp", "auto"] = "auto",
    *,
    gateway: Optional[str] = None,
    udp: bool = False,
) -> None:
    """Delete the gateway's mapping of ``port``."""
