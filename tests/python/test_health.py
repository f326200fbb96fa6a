"""portmgr.health(): the core's health report, rendered by the Python skin (issue 12).
The same problems as the Rust, C and CLI tests: a full service-type range and a full
explicit range. Explicit ranges: 12660-12679."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest

import portmgr

TYPE_RANGE = (12660, 12662)
EXPLICIT = (12670, 12672)


@pytest.fixture(autouse=True)
def tiny_type(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A types config with a three-port type "tiny", in force via PORTMGR_TYPES."""
    p = tmp_path / "types.json"
    p.write_text(json.dumps({"types": {"tiny": {"range": list(TYPE_RANGE), "description": "three ports"}}}))
    monkeypatch.setenv("PORTMGR_TYPES", str(p))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    yield


def test_an_empty_registry_is_healthy() -> None:
    h = portmgr.health()
    assert isinstance(h, portmgr.Health)
    assert h.ok is True and h.problems == [] and h.held == 0
    assert h.threshold == 0.9
    pool = h.ranges[0]
    assert (pool.kind, pool.range, pool.service_type) == ("pool", portmgr.default_pool(), None)


def test_a_full_type_range_and_a_full_explicit_range_are_both_problems() -> None:
    typed = portmgr.allocate(type="tiny", count=3)
    explicit = portmgr.allocate(range=EXPLICIT, count=3)
    try:
        assert sorted(typed.ports) == list(range(TYPE_RANGE[0], TYPE_RANGE[1] + 1))
        h = portmgr.health()
        assert h.ok is False
        assert h.held == 6
        exhausted = {(p.range, p.service_type): p for p in h.problems if p.kind == "exhausted"}
        assert set(exhausted) == {(TYPE_RANGE, "tiny"), (EXPLICIT, None)}, h.problems
        for p in exhausted.values():
            assert isinstance(p, portmgr.Problem)
            assert p.message and p.port is None and p.lease is None
        # Every problem is one of the documented kinds, with a message.
        assert all(p.kind in {"exhausted", "bound_elsewhere", "expired", "owner_gone", "damaged"} for p in h.problems)
        # The ranges in use: the pool, the type's range, the explicit range.
        kinds = {(r.kind, r.range, r.service_type): r for r in h.ranges}
        assert ("type", TYPE_RANGE, "tiny") in kinds and ("explicit", EXPLICIT, None) in kinds
        full = kinds[("type", TYPE_RANGE, "tiny")]
        assert (full.size, full.held, full.utilization) == (3, 3, 1.0)
        # Below the threshold nothing is exhausted: a threshold of 1 still sees both (100%).
        assert {p.kind for p in portmgr.health(threshold=1.0).problems} == {"exhausted"}
    finally:
        typed.release()
        explicit.release()
    assert portmgr.health().ok


def test_a_threshold_outside_0_to_1_is_invalid() -> None:
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(portmgr.InvalidArgument, match="threshold"):
            portmgr.health(bad)


def test_services_health_on_another_registry(tmp_path: Path) -> None:
    reg = portmgr.Registry(tmp_path / "other")
    svc = portmgr.Services(reg)
    with reg.allocate(range=EXPLICIT, count=3):
        h = svc.health(threshold=0.5)
        assert [(p.kind, p.range) for p in h.problems] == [("exhausted", EXPLICIT)]
        assert portmgr.health().ok, "the default registry is not the other one"
