"""Issue 13 through Python: registry-wide reserved ports and exclude lists.

Ports 10200-10299 (see conftest.py for the suite's map)."""

from __future__ import annotations

import pytest

import portmgr
from conftest import run_python


def test_reserved_ports_are_never_handed_out_in_any_process() -> None:
    kept = portmgr.reserve([10200, (10202, 10204)], reason="monitoring")
    assert kept == []
    got = [r for r in portmgr.reserved()]
    assert [(r.start, r.end, r.reason) for r in got] == [(10200, 10200, "monitoring"), (10202, 10204, "monitoring")]
    assert 10203 in got[1] and 10205 not in got[1]
    # This process: only 10201 and 10205 of 10200-10205 can be handed out.
    a = portmgr.allocate(range=(10200, 10205), strategy="sequential")
    b = portmgr.allocate(range=(10200, 10205), strategy="sequential")
    assert sorted([a.port, b.port]) == [10201, 10205]
    with pytest.raises(portmgr.PortsExhausted):
        portmgr.allocate(range=(10200, 10205))
    a.release()
    b.release()
    # Another interpreter sees the same reservations.
    out = run_python(
        """
        import portmgr
        print(sorted(portmgr.allocate(range=(10200, 10205), strategy="random").port for _ in range(2)))
        """
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[10201, 10205]"
    with pytest.raises(portmgr.PortInUse, match="monitoring"):
        portmgr.allocate(preferred=10203, required=True)
    assert portmgr.stats().reserved == 4


def test_reserve_validation_and_unreserve() -> None:
    for bad in ["a\nb", "x" * 300]:
        with pytest.raises(portmgr.InvalidArgument):
            portmgr.reserve(10210, reason=bad)
    with pytest.raises(portmgr.InvalidArgument):
        portmgr.reserve((10215, 10210))
    with pytest.raises(portmgr.InvalidArgument):
        portmgr.reserve("10210-x")
    with pytest.raises(TypeError):
        portmgr.reserve(True)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        portmgr.reserve([1.5])  # type: ignore[list-item]
    with pytest.raises(portmgr.NotFound):
        portmgr.unreserve(10210)
    portmgr.reserve("10210-10219")
    freed = portmgr.unreserve([10212, (10214, 10215)])
    assert [(r.start, r.end) for r in freed] == [(10212, 10212), (10214, 10215)]
    assert [(r.start, r.end, r.reason) for r in portmgr.reserved()] == [
        (10210, 10211, None),
        (10213, 10213, None),
        (10216, 10219, None),
    ]


def test_reserving_a_leased_port_keeps_the_lease() -> None:
    lease = portmgr.allocate(preferred=10220, required=True)
    kept = portmgr.reserve(10220, reason="proxy")
    assert [k.port for k in kept] == [10220] and kept[0].lease_id == lease.id
    assert portmgr.get_by_port(10220) is not None
    lease.release()
    with pytest.raises(portmgr.PortInUse, match="proxy"):
        portmgr.allocate(preferred=10220, required=True)


def test_exclude_in_every_form() -> None:
    lease = portmgr.allocate(range=(10230, 10235), strategy="sequential", exclude=[10230, (10231, 10233)])
    assert lease.port == 10234
    lease = portmgr.allocate(range=(10230, 10235), strategy="sequential", exclude="10230-10234")
    assert lease.port == 10235
    port = portmgr.free_port(range=(10236, 10237), exclude=10236)
    assert port == 10237
    with pytest.raises(portmgr.InvalidArgument):
        portmgr.allocate(range=(10238, 10238), exclude=[10238])
    with pytest.raises(portmgr.InvalidArgument, match="exclude"):
        portmgr.allocate(preferred=10239, required=True, exclude=[10239])
    with pytest.raises(TypeError):
        portmgr.allocate(exclude=[None])  # type: ignore[list-item]


def test_module_port_maps() -> None:
    lease = portmgr.allocate(name="shop", internal_ports=[8080, 9090], range=(10240, 10249))
    pm = lease.port_map
    assert pm is not None and list(pm) == [8080, 9090]
    assert sorted(pm.values()) == sorted(lease.ports) and pm[8080] < pm[9090]
    svc = portmgr.get_service("shop")
    assert svc is not None and svc.port_map == pm
    assert portmgr.allocate(range=(10240, 10249)).port_map is None
    env = portmgr.export("env")
    assert f"SHOP_8080_PORT={pm[8080]}\n" in env and f"SHOP_9090_PORT={pm[9090]}\n" in env
    # Releasing by name frees every port of the module.
    assert sorted(portmgr.release_name("shop")) == sorted(pm.values())
    for bad in ([8080, 8080], [0], [70000]):
        with pytest.raises(portmgr.InvalidArgument):
            portmgr.allocate(name="bad", internal_ports=bad, range=(10240, 10249))
    with pytest.raises(portmgr.InvalidArgument):
        portmgr.allocate(name="bad", internal_ports=[1, 2], count=3, range=(10240, 10249))
    with pytest.raises(TypeError):
        portmgr.allocate(name="bad", internal_ports=["8080"])  # type: ignore[list-item]
    assert portmgr.get_service("bad") is None


def test_overview_and_per_type_stats() -> None:
    portmgr.reserve((10258, 10259), reason="t")
    web = portmgr.allocate(name="web", range=(10250, 10259))
    portmgr.allocate(name="mod", internal_ports=[1, 2], range=(10250, 10259))
    ov = portmgr.overview()
    assert sorted(ov["services"]) == ["mod", "web"]
    assert isinstance(ov["services"]["web"], portmgr.Service)
    assert ov["ports"][web.port] == "web"
    assert len([p for p, n in ov["ports"].items() if n == "mod"]) == 2
    st = ov["stats"]
    assert st["held"] == 3 and st["reserved"] == 2
    rng = [r for r in st["ranges"] if r["range"] == [10250, 10259]]
    assert rng and rng[0]["held"] == 3 and rng[0]["reserved"] == 2, st["ranges"]
    assert {t["type"] for t in st["types"]} >= {"rest-api", "database"}
    assert portmgr.stats_full()["types"] == st["types"]


def test_health_counts_reserved_ports() -> None:
    portmgr.reserve((10260, 10268))
    portmgr.allocate(range=(10260, 10269))
    h = portmgr.health(threshold=0.9)
    r = [u for u in h.ranges if u.range == (10260, 10269)][0]
    assert (r.held, r.reserved, r.utilization) == (1, 9, 1.0)
    assert h.reserved == 9
    assert any(p.kind == "exhausted" and "9 reserved" in p.message for p in h.problems)
