"""Issue 11: a Lease (and a port from free_port) is a handle on one lease, never on
"whatever holds that port now". Renewing, keeping or releasing it after it is gone
fails instead of acting on the next holder of the port: another lease of this process,
another process's, or the CLI's. Ports 10100-10199, one-port ranges so the next holder
gets the same port."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import portmgr


# expires_ms is the boot-clock expiry shown as wall time: it moves by a millisecond or so
# between two reads. A TTL cut to 5 s would move it by minutes.
SLACK_MS = 1000


def info(port: int) -> portmgr.LeaseInfo:
    i = portmgr.get_by_port(port)
    assert i is not None, f"port {port} is not held"
    return i


def cli(*args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "portmgr", *args], capture_output=True, text=True, timeout=60, env=os.environ.copy()
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_renew_after_release_leaves_the_next_holder_in_this_process_alone() -> None:
    rng = (10100, 10100)
    old = portmgr.allocate(range=rng)
    port = old.port
    old.release()
    # The next holder, held by this process (no TTL): a renew through the old lease
    # must neither give it a TTL nor detach it.
    new = portmgr.allocate(range=rng)
    assert new.port == port
    with pytest.raises(portmgr.NotFound, match="released"):
        old.renew(5)
    i = info(port)
    assert (i.lease_id, i.expires_ms, i.detached) == (new.id, None, False)
    new.release()
    # The next holder with a long TTL: not cut to 5 s.
    long = portmgr.allocate(range=rng, ttl=300)
    before = info(port).expires_ms
    assert before is not None
    with pytest.raises(portmgr.NotFound):
        old.renew(5)
    after = info(port).expires_ms
    assert after is not None and after + SLACK_MS >= before, f"the other lease's TTL was cut: {before} -> {after}"
    long.release()


def test_renew_after_release_leaves_another_process_lease_alone() -> None:
    old = portmgr.allocate(range=(10110, 10110))
    port = old.port
    old.release()
    # The CLI (another process) takes the port for 5 minutes.
    assert cli("alloc", "--ttl", "5m", "--range", "10110-10110") == str(port)
    before = info(port)
    assert before.owner_pid != os.getpid() and before.expires_ms is not None
    with pytest.raises(portmgr.NotFound, match="released"):
        old.renew(5)
    after = info(port)
    assert after.lease_id == before.lease_id
    assert after.expires_ms is not None and after.expires_ms + SLACK_MS >= before.expires_ms, "the CLI's lease was cut short"
    assert portmgr.release(port) == [port]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("kept", [False, True])
def test_renew_in_a_forked_child_does_nothing(kept: bool) -> None:
    lease = portmgr.allocate(range=(10120, 10120))
    if kept:
        lease.keep()
    before = info(lease.port)
    pid = os.fork()
    if pid == 0:  # child: the lease is the parent's
        code = 1
        try:
            lease.renew(1)
            code = 0
        except BaseException:
            code = 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    after = info(lease.port)
    assert after.lease_id == lease.id
    assert after.expires_ms is None, "the child gave the parent's lease a 1 s TTL"
    assert after.detached == before.detached == kept
    # The parent's own renew still works.
    lease.renew(60)
    assert info(lease.port).expires_ms is not None
    assert portmgr.release(lease.port) == [lease.port]


def test_a_kept_lease_renews_by_its_own_id() -> None:
    rng = (10130, 10130)
    lease = portmgr.allocate(range=rng)
    port = lease.port
    assert lease.keep() == [port]
    lease.renew(60)
    assert info(port).expires_ms is not None
    # Released elsewhere, then the port goes to a TTL lease of another process.
    assert cli("release", str(port)) == str(port)
    assert cli("alloc", "--ttl", "5m", "--range", "10130-10130") == str(port)
    before = info(port).expires_ms
    assert before is not None
    with pytest.raises(portmgr.NotFound):
        lease.renew(5)
    after = info(port).expires_ms
    assert after is not None and abs(after - before) < SLACK_MS, f"the CLI's lease was renewed: {before} -> {after}"
    portmgr.release(port)


def test_keep_after_release_raises() -> None:
    lease = portmgr.allocate(range=(10140, 10140))
    port = lease.port
    lease.release()
    with pytest.raises(portmgr.NotFound, match="released"):
        lease.keep()
    assert portmgr.get_by_port(port) is None
    assert "released" in repr(lease)
    # Keeping twice is fine (the same ports); a kept lease is released by port.
    kept = portmgr.allocate(range=(10141, 10141))
    assert kept.keep() == kept.ports
    assert kept.keep() == kept.ports
    assert portmgr.release(kept.port) == kept.ports


def test_group_keep_after_release_raises() -> None:
    g = portmgr.allocate_group("issue11", {"a": 0, "b": 1}, range=(10150, 10159))
    ports = list(g.ports.values())
    g.release()
    with pytest.raises(portmgr.NotFound, match="released"):
        g.keep()
    assert all(portmgr.get_by_port(p) is None for p in ports)


def test_release_by_port_frees_this_process_live_lease_not_a_stale_one() -> None:
    rng = (10160, 10160)
    port = portmgr.free_port(range=rng, ttl=60)
    # Released by another process (allowed: it has a TTL); this process takes the port
    # again with a new free_port.
    assert cli("release", str(port)) == str(port)
    again = portmgr.free_port(range=rng)
    assert again == port
    assert portmgr.release(port) == [port]
    assert portmgr.get_by_port(port) is None, "release(port) released the stale lease, not the live one"


def test_release_by_port_of_a_gone_free_port_leaves_the_next_holder_alone() -> None:
    rng = (10170, 10170)
    port = portmgr.free_port(range=rng, ttl=60)
    assert cli("release", str(port)) == str(port)
    assert cli("alloc", "--ttl", "5m", "--range", "10170-10170") == str(port)
    theirs = info(port).lease_id
    with pytest.raises(portmgr.NotFound, match="no longer"):
        portmgr.release(port)
    assert info(port).lease_id == theirs
    # Asked again, by port: the call now means "whatever holds the port" (it is the
    # CLI's TTL lease, releasable by anyone of the user).
    assert portmgr.release(port) == [port]


def test_lease_ids_release_and_renew() -> None:
    """Issue 13.2: the lease id is a handle (Registry.release_id/renew_id and the module
    wrappers); an unknown or released id is NotFound, never a silent success. Ports
    10180-10189."""
    rng = (10180, 10188)  # 10189: the CLI's, below
    reg = portmgr.registry()
    a = portmgr.allocate(range=rng, count=2)
    b = portmgr.allocate(range=rng, ttl=60)
    assert a.id != b.id
    assert {i.lease_id for i in portmgr.leases() if i.port in a.ports} == {a.id}
    assert info(b.port).lease_id == b.id

    # renew by id: that lease gets the TTL, the other keeps its own
    b_before = info(b.port).expires_ms
    reg.renew_id(a.id, 300)
    exp = info(a.ports[0]).expires_ms
    assert exp is not None and b_before is not None and exp > b_before + 200_000
    portmgr.renew_id(b.id)  # by its own TTL again
    assert info(b.port).expires_ms is not None

    # release by id: every port of that lease, nothing else
    assert sorted(reg.release_id(a.id)) == sorted(a.ports)
    assert all(portmgr.get_by_port(p) is None for p in a.ports)
    assert info(b.port).lease_id == b.id

    # released or unknown ids: NotFound from every call
    unknown = max(a.id, b.id) + 1000
    for bad in (a.id, unknown, 0):
        with pytest.raises(portmgr.NotFound):
            reg.release_id(bad)
        with pytest.raises(portmgr.NotFound):
            portmgr.release_id(bad)
        with pytest.raises(portmgr.NotFound):
            reg.renew_id(bad, 60)
        with pytest.raises(portmgr.NotFound):
            portmgr.renew_id(bad)
    a.release()  # already freed by id: still idempotent

    # an id from another process (the CLI's kept lease) is released here by id
    port = int(cli("alloc", "--ttl", "5m", "--range", "10189-10189"))
    theirs = info(port).lease_id
    assert portmgr.release_id(theirs) == [port]
    assert portmgr.get_by_port(port) is None
    assert portmgr.release_id(b.id) == [b.port]
    with pytest.raises(portmgr.NotFound):
        b.renew(60)
    b.release()
