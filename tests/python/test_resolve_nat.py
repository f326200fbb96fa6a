"""Issue 19 from Python: portmgr.Resolver against a real dnsmasq and
portmgr.stun_external_address against a real coturn, both started here on 127.0.0.1
(installed by scripts/ensure-deb.sh when missing) and killed at the end. Ports
17200-17299."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Iterator

import pytest

import portmgr

REPO = Path(__file__).resolve().parents[2]
HOSTS = "127.0.0.21 a.example.test\n127.0.0.22 b.example.test\n127.0.0.23 c.example.test\n::21 a.example.test\n"
SRV = [
    "_db._tcp.example.test,a.example.test,5001,10,30",
    "_db._tcp.example.test,b.example.test,5002,10,10",
    "_db._tcp.example.test,c.example.test,5003,20,60",
]


def ensure(binary: str, package: str) -> str:
    out = subprocess.run(
        ["bash", str(REPO / "scripts/ensure-deb.sh"), binary, package], stdout=subprocess.PIPE, text=True, check=True
    )
    return out.stdout.strip().splitlines()[-1]


def wait_until(what: str, proc: subprocess.Popen[bytes], ready: "object") -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{what} exited with {proc.returncode}"
        if ready():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} was not ready within 15 s")


class Dnsmasq:
    def __init__(self, tmp: Path, port: int, ttl: int) -> None:
        self.port = port
        self.hosts = tmp / "hosts"
        self.hosts.write_text(HOSTS)
        self.log = tmp / "dnsmasq.log"
        args = [
            ensure("dnsmasq", "dnsmasq"),
            "--conf-file=/dev/null", "--keep-in-foreground", "--no-resolv", "--no-hosts",
            "--bind-interfaces", "--listen-address=127.0.0.1", f"--port={port}",
            f"--addn-hosts={self.hosts}", f"--local-ttl={ttl}", "--local=/example.test/",
            "--log-queries", f"--log-facility={self.log}", f"--pid-file={tmp / 'pid'}",
            "--user=root", "--group=root",
        ] + [f"--srv-host={s}" for s in SRV]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until("dnsmasq", self.proc, lambda: self.reads() > 0)

    def reads(self) -> int:
        return self.log.read_text().count("read ") if self.log.exists() else 0

    def set_hosts(self, text: str) -> None:
        before = self.reads()
        self.hosts.write_text(text)
        os.kill(self.proc.pid, signal.SIGHUP)
        wait_until("dnsmasq reread", self.proc, lambda: self.reads() > before)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def dnsmasq(tmp_path: Path) -> Iterator[Dnsmasq]:
    d = Dnsmasq(tmp_path, 17200, 2)
    try:
        yield d
    finally:
        d.stop()


def test_resolve_and_pick_with_every_policy(dnsmasq: Dnsmasq) -> None:
    server = f"127.0.0.1:{dnsmasq.port}"
    r = portmgr.Resolver(servers=[server])
    got = [(e.address, e.port, e.target, e.priority, e.weight) for e in r.resolve("_db._tcp.example.test")]
    assert got == [
        ("127.0.0.21", 5001, "a.example.test", 10, 30),
        ("::21", 5001, "a.example.test", 10, 30),
        ("127.0.0.22", 5002, "b.example.test", 10, 10),
        ("127.0.0.23", 5003, "c.example.test", 20, 60),
    ]
    assert [(e.address, e.port) for e in r.resolve("a.example.test:80")] == [("127.0.0.21", 80), ("::21", 80)]
    # Round-robin cycles exactly.
    everything = r.resolve("_db._tcp.example.test")
    assert [r.pick("_db._tcp.example.test") for _ in range(8)] == everything * 2
    # Weighted: by SRV weight, a target's two addresses share its weight.
    w = portmgr.Resolver(servers=[server], policy="weighted")
    n = 10_000
    c = Counter(w.pick("_db._tcp.example.test").target for _ in range(n))
    for target, want in [("a.example.test", 0.3), ("b.example.test", 0.1), ("c.example.test", 0.6)]:
        assert abs(c[target] / n - want) < 0.03, c
    # Priority: never the priority-20 target.
    p = portmgr.Resolver(servers=[server], policy="priority")
    c = Counter(p.pick("_db._tcp.example.test").target for _ in range(n))
    assert c["c.example.test"] == 0 and abs(c["a.example.test"] / n - 0.75) < 0.03, c
    with pytest.raises(portmgr.InvalidArgument):
        portmgr.Resolver(policy="random")
    with pytest.raises(portmgr.NotFound, match="NXDOMAIN"):
        r.resolve("nope.example.test:80")


def test_ttl_and_negative_cache(dnsmasq: Dnsmasq) -> None:
    r = portmgr.Resolver(servers=[f"127.0.0.1:{dnsmasq.port}"], negative_ttl=2.0)
    assert r.resolve("b.example.test:1")[0].address == "127.0.0.22"
    with pytest.raises(portmgr.NotFound):
        r.resolve("late.example.test:1")
    asked = r.queries
    dnsmasq.set_hosts(HOSTS.replace("127.0.0.22", "127.0.0.32") + "127.0.0.41 late.example.test\n")
    assert r.resolve("b.example.test:1")[0].address == "127.0.0.22"  # cached for the 2 s TTL
    with pytest.raises(portmgr.NotFound):
        r.resolve("late.example.test:1")  # negative, for 2 s
    assert r.queries == asked
    time.sleep(2.3)
    assert r.resolve("b.example.test:1")[0].address == "127.0.0.32"
    assert r.resolve("late.example.test:1")[0].address == "127.0.0.41"
    assert r.queries > asked


def test_stun_external_address_against_coturn(tmp_path: Path) -> None:
    port = 17250
    proc = subprocess.Popen(
        [
            ensure("turnserver", "coturn"), "-n", "--listening-ip=127.0.0.1", f"--listening-port={port}",
            "--no-tls", "--no-dtls", "--stun-only", "--no-cli", "--simple-log",
            f"--log-file={tmp_path / 'turn.log'}", f"--pidfile={tmp_path / 'pid'}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.settimeout(0.1)
        request = bytes([0, 1, 0, 0, 0x21, 0x12, 0xA4, 0x42]) + bytes(12)

        def answers() -> bool:
            probe.sendto(request, ("127.0.0.1", port))
            try:
                return probe.recv(512)[:2] == b"\x01\x01"
            except OSError:
                return False

        wait_until("turnserver", proc, answers)
        probe.close()
        assert portmgr.stun_external_address(f"127.0.0.1:{port}", local_port=17251) == ("127.0.0.1", 17251)
        host, got_port = portmgr.stun_external_address(f"localhost:{port}")
        assert host == "127.0.0.1" and got_port > 0
    finally:
        proc.kill()
        proc.wait()


def sh(cmd: str) -> None:
    subprocess.run(["sh", "-ec", cmd], check=True, stdout=subprocess.DEVNULL)


@pytest.fixture
def natlab(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A client namespace behind a masquerading router namespace running miniupnpd
    (nftables; NAT-PMP and UPnP IGD), and an outer namespace: made here, removed at the
    end. Addresses exist only inside them (see tests/netserv/mod.rs, the same lab)."""
    mini = ensure("miniupnpd", "miniupnpd-nftables")
    ensure("nft", "nftables")
    t = f"{os.getpid() % 100000}p"
    r, c, o = f"h19r{t}", f"h19c{t}", f"h19o{t}"
    proc = None
    try:
        sh(
            f"""for n in {r} {c} {o}; do ip netns add $n; ip -n $n link set lo up; done
            ip link add pc{t} type veth peer name pr{t}; ip link add po{t} type veth peer name px{t}
            ip link set pc{t} netns {c}; ip link set pr{t} netns {r}; ip link set po{t} netns {o}; ip link set px{t} netns {r}
            ip -n {c} addr add 10.77.0.2/24 dev pc{t}; ip -n {c} link set pc{t} up; ip -n {c} route add default via 10.77.0.1
            ip -n {r} addr add 10.77.0.1/24 dev pr{t}; ip -n {r} link set pr{t} up
            ip -n {r} addr add 11.77.0.1/24 dev px{t}; ip -n {r} link set px{t} up
            ip -n {o} addr add 11.77.0.2/24 dev po{t}; ip -n {o} link set po{t} up
            ip netns exec {r} sysctl -qw net.ipv4.ip_forward=1"""
        )
        (tmp_path / "r.nft").write_text(
            "table inet miniupnpd {\n"
            f' chain forward {{ type filter hook forward priority 0; policy drop; ct state established,related accept; iifname "pr{t}" accept; jump miniupnpd; }}\n'
            " chain miniupnpd { }\n"
            " chain prerouting { type nat hook prerouting priority -100; policy accept; jump prerouting_miniupnpd; }\n"
            f' chain postrouting {{ type nat hook postrouting priority 100; policy accept; oifname "px{t}" masquerade; jump postrouting_miniupnpd; }}\n'
            " chain prerouting_miniupnpd { }\n chain postrouting_miniupnpd { }\n}\n"
        )
        sh(f"ip netns exec {r} nft -f {tmp_path / 'r.nft'}")
        conf = tmp_path / "miniupnpd.conf"
        conf.write_text(
            f"ext_ifname=px{t}\nlistening_ip=pr{t}\nenable_natpmp=yes\nenable_upnp=yes\nsecure_mode=yes\n"
            "upnp_table_name=miniupnpd\nupnp_nat_table_name=miniupnpd\nupnp_forward_chain=miniupnpd\n"
            "upnp_nat_chain=prerouting_miniupnpd\nupnp_nat_postrouting_chain=postrouting_miniupnpd\n"
            f"uuid=3d3cec3a-8cf0-11e0-98ee-001a6bd2d07d\nlease_file={tmp_path / 'leases'}\nmin_lifetime=1\n"
            "allow 1024-65535 10.77.0.0/24 1024-65535\ndeny 0-65535 0.0.0.0/0 0-65535\n"
        )
        log = tmp_path / "miniupnpd.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", r, mini, "-d", "-f", str(conf), "-P", str(tmp_path / "pid")],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_until("miniupnpd", proc, lambda: "Listening for NAT-PMP" in log.read_text())
        yield {"client": c, "outer": o, "inside": "10.77.0.1", "outside": "11.77.0.1"}
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        for n in (r, c, o):
            subprocess.run(["ip", "netns", "del", n], stderr=subprocess.DEVNULL)


CLIENT = """
import json, socket, sys, threading, portmgr
port, proto = int(sys.argv[1]), sys.argv[2]
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); l.bind(("0.0.0.0", port)); l.listen()
m = portmgr.nat_map(port, proto, lifetime=600)
print(json.dumps([m.gateway, m.protocol, m.internal_port, m.external_port, m.lifetime]), flush=True)
c, _ = l.accept(); c.sendall(b"hello"); c.close()
sys.stdin.readline()
portmgr.nat_unmap(port, proto)
print("unmapped", flush=True)
"""

OUTER = """
import socket, sys
try:
    s = socket.create_connection(("11.77.0.1", int(sys.argv[1])), timeout=3)
    print(s.recv(10).decode() or "empty")
except ConnectionRefusedError:
    print("refused")
"""


def from_outside(natlab: dict[str, str], port: int) -> str:
    """Connect from the outer namespace to the router's outer address at ``port``: what
    the listener sent, or "refused"."""
    import sys

    out = subprocess.run(
        ["ip", "netns", "exec", natlab["outer"], sys.executable, "-c", OUTER, str(port)],
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def in_client(natlab: dict[str, str], script: str, *args: str) -> "subprocess.Popen[str]":
    """Run the Python `script` with `args` in the client namespace, stdin and stdout piped."""
    import sys

    return subprocess.Popen(
        ["ip", "netns", "exec", natlab["client"], sys.executable, "-c", script, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("proto,port", [("natpmp", 17260), ("upnp", 17261)])
def test_nat_map_and_unmap_through_miniupnpd(natlab: dict[str, str], proto: str, port: int) -> None:
    import json

    def outside() -> str:
        return from_outside(natlab, port)

    with in_client(natlab, CLIENT, str(port), proto) as client:
        try:
            assert client.stdout is not None and client.stdin is not None
            gateway, protocol, internal, external, lifetime = json.loads(client.stdout.readline())
            assert (gateway, protocol, internal, external) == (natlab["inside"], "tcp", port, port)
            assert 0 < lifetime <= 600
            assert outside() == "hello"
            client.stdin.write("\n")
            client.stdin.flush()
            assert client.stdout.readline().strip() == "unmapped"
            assert outside() == "refused"
        finally:
            client.kill()


TIED = """
import json, socket, sys, portmgr
port = int(sys.argv[1])
lease = portmgr.allocate(range=(port, port))
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); l.bind(("0.0.0.0", port)); l.listen()
def serve():
    while True:
        c, _ = l.accept(); c.sendall(b"hello"); c.close()
import threading; threading.Thread(target=serve, daemon=True).start()
m = portmgr.nat_map(port, "natpmp", lifetime=2)
assert isinstance(m, portmgr.Mapping) and portmgr.PortMapping is portmgr.Mapping
print(json.dumps([m.lease_id == lease.id, m.method, m.state, m.lifetime, m.external_port]), flush=True)
sys.stdin.readline()
print(json.dumps([m.renewals, m.error]), flush=True)
lease.release()
ended = m.wait_ended(5)
print(json.dumps([ended, m.state, m.error]), flush=True)
sys.stdin.readline()
"""


def test_nat_map_is_tied_to_the_lease_renewed_then_deleted_on_release(natlab: dict[str, str]) -> None:
    import json
    import time

    port = 17262

    def outside() -> str:
        return from_outside(natlab, port)

    with in_client(natlab, TIED, str(port)) as client:
        try:
            assert client.stdout is not None and client.stdin is not None
            assert json.loads(client.stdout.readline()) == [True, "natpmp", "active", 2.0, port]
            time.sleep(5)  # past two lifetimes of 2 s: only the renewals keep it
            assert outside() == "hello"
            client.stdin.write("\n")
            client.stdin.flush()
            renewals, error = json.loads(client.stdout.readline())
            assert renewals >= 3 and error is None
            # Released: deleted by the follower; the listener is still there.
            assert json.loads(client.stdout.readline()) == [True, "lease_ended", None]
            assert outside() == "refused"
            client.stdin.write("\n")
            client.stdin.flush()
            assert client.wait(10) == 0
        finally:
            client.kill()
