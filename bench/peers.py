"""Bench-only driver for bench/run.py: the Python peers and portmgr's Python API.

Runs inside the bench venv, where the peers are installed from PyPI (none of their code
is in this repository). Same line protocol as bench/peers/src/main.rs and bench/peers_c.c:

  latency PEER:N ...        N timed "give me a port" calls per peer, interleaved in
                            rounds; prints {"peer": {"median_us", "p99_us", "n"}}
  collide PEER tcp|udp N    READY, wait for a line, take N ports, only then bind them all
                            on 127.0.0.1 and hold them; print a JSON line; wait; exit
  burst PEER M              take 1 port (warm-up), READY, wait, take M ports (held),
                            print DONE <start> <end> (CLOCK_MONOTONIC s), wait, exit
  held-latency N DIR ...    N timed portmgr allocate calls per registry dir, interleaved
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import time

ROUNDS = 20


def _bind0(kind: int) -> int:
    s = socket.socket(socket.AF_INET, kind)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def _fixture_body(fixture):  # type: ignore[no-untyped-def]
    """The function under a pytest fixture definition (pytest >= 8.4 wraps it)."""
    get = getattr(fixture, "_get_wrapped_function", None)
    return get() if get is not None else fixture.__wrapped__


class Peer:
    """One peer: take(udp) -> port or None; untake(port) undoes a latency call untimed,
    so that call N+1 sees what call 1 saw; reset() once per latency round."""

    udp = True

    def __init__(self, name: str) -> None:
        self.name = name
        self.held: list[object] = []
        self.setup()

    def setup(self) -> None:
        pass

    def take(self, udp: bool) -> int | None:
        raise NotImplementedError

    def untake(self, port: int | None) -> None:
        pass

    def reset(self) -> None:
        pass


class Bind0(Peer):
    """The kernel: bind 127.0.0.1:0, read the port, close."""

    def take(self, udp: bool) -> int | None:
        return _bind0(socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)


class Portpicker(Peer):
    """portpicker.pick_unused_port(), no server (PORTSERVER_ADDRESS removed)."""

    def setup(self) -> None:
        os.environ.pop("PORTSERVER_ADDRESS", None)
        import portpicker

        self.pp = portpicker

    def take(self, udp: bool) -> int | None:
        return self.pp.pick_unused_port()  # free for TCP and UDP alike

    def untake(self, port: int | None) -> None:
        # Forget the port (its per-process "already handed out" set), as a test would.
        if port:
            self.pp.return_port(port)


class Portserver(Portpicker):
    """portpicker.pick_unused_port() asking the portserver run.py started."""

    def setup(self) -> None:
        super().setup()
        self.addr = os.environ["PORTMGR_BENCH_PORTSERVER"]

    def take(self, udp: bool) -> int | None:
        return self.pp.pick_unused_port(portserver_address=self.addr)

    def untake(self, port: int | None) -> None:
        pass  # the server's lease ends with this process; return_port would recycle locally


class EphemeralPortReserve(Peer):
    """ephemeral_port_reserve.reserve(): TCP on 127.0.0.1, left in TIME_WAIT."""

    udp = False

    def setup(self) -> None:
        import ephemeral_port_reserve

        self.reserve = ephemeral_port_reserve.reserve

    def take(self, udp: bool) -> int | None:
        return self.reserve()


class PortFor(Peer):
    """port_for.get_port(None): a random unassigned port outside the ephemeral range."""

    udp = False

    def setup(self) -> None:
        import port_for

        self.get_port = port_for.get_port

    def take(self, udp: bool) -> int | None:
        return self.get_port(None)


class PytestAsyncioPort(Peer):
    """The body of pytest-asyncio's unused_tcp_port / unused_udp_port fixtures."""

    def setup(self) -> None:
        from pytest_asyncio import plugin

        self.tcp = _fixture_body(plugin.unused_tcp_port)
        self.udp_fn = _fixture_body(plugin.unused_udp_port)

    def take(self, udp: bool) -> int | None:
        return self.udp_fn() if udp else self.tcp()


class PytestAsyncioFactory(Peer):
    """The factories of unused_tcp_port_factory / unused_udp_port_factory (session
    fixtures: one per process, never repeating a port within it)."""

    def setup(self) -> None:
        from pytest_asyncio import plugin

        self.make_tcp = _fixture_body(plugin.unused_tcp_port_factory)
        self.make_udp = _fixture_body(plugin.unused_udp_port_factory)
        self.reset()

    def reset(self) -> None:
        # A fresh session per latency round: the factory's set must not fill the range.
        self.tcp, self.udp_f = self.make_tcp(), self.make_udp()

    def take(self, udp: bool) -> int | None:
        return self.udp_f() if udp else self.tcp()


class Portmgr(Peer):
    """portmgr.allocate(): one port from the shared registry ($PORTMGR_DIR)."""

    def setup(self) -> None:
        import portmgr

        self.pm = portmgr

    def take(self, udp: bool) -> int | None:
        lease = self.pm.allocate(proto="udp" if udp else "tcp")
        self.held.append(lease)
        return lease.port

    def untake(self, port: int | None) -> None:
        for lease in self.held:
            lease.release()  # type: ignore[attr-defined]
        self.held.clear()


class PortmgrCycle(Portmgr):
    """portmgr.allocate() and lease.release(), both timed."""

    def take(self, udp: bool) -> int | None:
        lease = self.pm.allocate(proto="udp" if udp else "tcp")
        lease.release()
        return lease.port


class PortmgrFreePort(Portmgr):
    """portmgr.free_port(): the port number only (held until release or exit); the
    release is untimed. Row from bench/python_latency.py (the Python skin's own script)."""

    def take(self, udp: bool) -> int | None:
        port = self.pm.free_port(proto="udp" if udp else "tcp")
        self.held.append(port)
        return port

    def untake(self, port: int | None) -> None:
        for p in self.held:
            self.pm.release(p)
        self.held.clear()


class PortmgrBoundSocket(Portmgr):
    """portmgr.bound_socket(host="127.0.0.1"): a listening socket on a fresh port, the
    race-free hand-over; close and release untimed. Row from bench/python_latency.py."""

    def take(self, udp: bool) -> int | None:
        sock = self.pm.bound_socket(host="127.0.0.1")  # listening: loopback only
        self.held.append(sock)
        return sock.getsockname()[1]

    def untake(self, port: int | None) -> None:
        for sock in self.held:
            sock.close()  # type: ignore[attr-defined]
        if port:
            self.pm.release(port)
        self.held.clear()


PEERS = {
    "bind0": Bind0,
    "portpicker": Portpicker,
    "portserver": Portserver,
    "epr": EphemeralPortReserve,
    "portfor": PortFor,
    "pa_port": PytestAsyncioPort,
    "pa_factory": PytestAsyncioFactory,
    "portmgr": Portmgr,
    "portmgr_cycle": PortmgrCycle,
    "portmgr_free_port": PortmgrFreePort,
    "portmgr_bound": PortmgrBoundSocket,
}


def _stats(v: list[float]) -> dict[str, float]:
    if not v:
        return {"median_us": 0.0, "p99_us": 0.0, "n": 0}
    v.sort()
    return {"median_us": v[round((len(v) - 1) * 0.5)], "p99_us": v[round((len(v) - 1) * 0.99)], "n": len(v)}


def latency(specs: list[str]) -> None:
    peers = []
    for spec in specs:
        name, n = spec.split(":")
        peers.append((name, PEERS[name](name), int(n)))
    clock = time.perf_counter_ns
    for _, p, n in peers:
        for _ in range(max(5, n // 10)):
            p.untake(p.take(False))
    samples: list[list[float]] = [[] for _ in peers]
    errors = [0 for _ in peers]
    for _ in range(ROUNDS):
        for i, (_, p, n) in enumerate(peers):
            p.reset()
            for _ in range(max(1, n // ROUNDS)):
                t = clock()
                try:
                    port = p.take(False)
                except Exception:
                    port = None
                dt = clock() - t
                p.untake(port)
                if port:
                    samples[i].append(dt / 1e3)
                else:
                    errors[i] += 1  # a failed call is counted, not timed
    print(json.dumps({name: _stats(s) | {"errors": e} for (name, _, _), s, e in zip(peers, samples, errors)}), flush=True)


def collide(peer: str, proto: str, n: int) -> None:
    udp = proto == "udp"
    p = PEERS[peer](peer)
    print("READY", flush=True)
    sys.stdin.readline()
    ports, pick_errors = [], 0
    t = time.perf_counter()
    for _ in range(n):
        try:
            port = p.take(udp)
        except Exception:
            port = None
        if port:
            ports.append(port)
        else:
            pick_errors += 1
    pick_s = time.perf_counter() - t
    # Only now bind them all, as servers started later would: TCP with SO_REUSEADDR
    # (what servers set; ephemeral-port-reserve requires it) and listening; UDP plainly.
    held, errors = [], {}
    for port in ports:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
        try:
            if not udp:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
            if not udp:
                s.listen(128)
            held.append(s)
        except OSError as e:
            key = errno.errorcode.get(e.errno or 0, str(e))
            errors[key] = errors.get(key, 0) + 1
            s.close()
    print(json.dumps({"ports": ports, "pick_errors": pick_errors, "bind_errors": errors, "pick_s": pick_s}), flush=True)
    sys.stdin.readline()


def burst(peer: str, m: int) -> None:
    p = PEERS[peer](peer)
    p.take(False)  # warm-up (portmgr: claims this process's owner slot), held
    print("READY", flush=True)
    sys.stdin.readline()
    t = time.monotonic()  # CLOCK_MONOTONIC, the same clock in every driver
    for _ in range(m):
        if not p.take(False):
            raise SystemExit("no port")
    print(f"DONE {t} {time.monotonic()}", flush=True)
    sys.stdin.readline()


def held_latency(n: int, dirs: list[str]) -> None:
    import portmgr

    regs = [portmgr.Registry(d) for d in dirs]
    clock = time.perf_counter_ns
    for r in regs:
        for _ in range(max(5, n // 10)):
            r.allocate().release()
    samples: list[list[float]] = [[] for _ in regs]
    for _ in range(ROUNDS):
        for i, r in enumerate(regs):
            for _ in range(max(1, n // ROUNDS)):
                t = clock()
                lease = r.allocate()
                samples[i].append((clock() - t) / 1e3)
                lease.release()
    print(json.dumps({d: _stats(s) for d, s in zip(dirs, samples)}), flush=True)


def main(argv: list[str]) -> None:
    cmd, args = argv[0], argv[1:]
    if cmd == "latency":
        latency(args)
    elif cmd == "collide":
        collide(args[0], args[1], int(args[2]))
    elif cmd == "burst":
        burst(args[0], int(args[1]))
    elif cmd == "held-latency":
        held_latency(int(args[0]), args[1:])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
