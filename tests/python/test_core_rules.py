"""Decisions the core makes once for every skin (issue 12), seen from Python: the group
layout resolver (the same cases as tests/mapping.rs layout_resolver_rules, the CLI and
C tests) and the one typed-or-plain allocation path. Explicit ranges: 12590-12699."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, Mapping, Optional, Union

import pytest

import portmgr

RNG = (12590, 12699)

LayoutArg = Union[str, Mapping[str, Union[int, tuple[int, Optional[str]]]]]


@pytest.fixture(autouse=True)
def no_user_types(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Never the user's types config: no PORTMGR_TYPES, an empty XDG_CONFIG_HOME."""
    monkeypatch.delenv("PORTMGR_TYPES", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    yield


@pytest.fixture
def trio_types(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The types config of the Rust test: layouts "trio" and "odd=name"."""
    p = tmp_path / "types.json"
    p.write_text(
        json.dumps(
            {
                "groups": {
                    "trio": [
                        {"name": "a", "offset": 0},
                        {"name": "b", "offset": 1, "type": "cache"},
                        {"name": "c", "offset": 2},
                    ],
                    "odd=name": [{"name": "z", "offset": 7}],
                }
            }
        )
    )
    monkeypatch.setenv("PORTMGR_TYPES", str(p))
    return p


def members(layout: LayoutArg, rng: Optional[tuple[int, int]] = RNG) -> list[tuple[str, int, Optional[str]]]:
    """The layout as the core resolved it: (member, offset, type) of an allocated group."""
    with portmgr.allocate_group("g", layout, range=rng) as g:
        got = [(m.member, m.offset, m.type) for m in g.members]
    return got


def invalid(layout: LayoutArg) -> str:
    with pytest.raises(portmgr.InvalidArgument) as e:
        portmgr.allocate_group("g", layout, range=RNG)
    assert portmgr.leases() == [], "a refused layout left ports held"
    return str(e.value)


def test_layout_names_come_first(trio_types: Path) -> None:
    # 1. Names first: built in and configured, even a name that looks like a spec.
    stack = [
        ("postgres", 0, "database"),
        ("redis", 100, "cache"),
        ("clickhouse_http", 200, "analytics"),
        ("clickhouse_tcp", 300, "analytics"),
        ("backend", 400, "rest-api"),
        ("auth", 401, "security"),
        ("frontend", 500, "frontend"),
    ]
    assert members("stack", rng=None) == stack
    with portmgr.allocate_group("g", range=None) as g:  # no layout: "stack"
        assert [(m.member, m.offset, m.type) for m in g.members] == stack
    assert members("trio") == [("a", 0, None), ("b", 1, "cache"), ("c", 2, None)]
    assert members("odd=name") == [("z", 7, None)]


def test_layout_else_a_spec_with_either_separator(trio_types: Path) -> None:
    # 2. Else a spec, with "=" or ":".
    assert members("pg=0,redis:+100/cache") == [("pg", 0, None), ("redis", 100, "cache")]


def test_layout_else_an_unknown_name(trio_types: Path) -> None:
    # 3. Else an unknown name: the message lists the known layouts and how to give a spec.
    for unknown in ["nope", "", "Stack"]:
        m = invalid(unknown)
        assert f"no group layout named {json.dumps(unknown)}" in m, m
        assert "known layouts: odd=name, stack, trio" in m, m
        assert "spec" in m, m
    # A bad spec is the spec's own error.
    assert "appears twice" in invalid("a=0,a=1")
    assert "offset" in invalid("a=x")


def test_layout_members_in_order_offsets_checked(trio_types: Path) -> None:
    # 4. Members, in order, offsets checked, then validated like any layout.
    assert members({"web": 5, "db": (0, "database")}) == [("web", 5, None), ("db", 0, "database")]
    for bad in [-1, 65535, 1 << 40]:
        m = invalid({"a": bad})
        assert f"offset {bad} must be a number from 0 to 65534" in m, m
    assert "at least one member" in invalid({})
    assert "same offset" in invalid({"a": 0, "b": 0})
    assert "member name" in invalid({"a b": 0})


def test_a_configured_layout_is_unknown_without_its_config() -> None:
    assert "no group layout named \"trio\"" in invalid("trio")


def test_one_allocation_path_for_plain_and_typed() -> None:
    # Plain: nothing recorded.
    with portmgr.allocate(range=RNG) as plain:
        s = portmgr.get_service_by_port(plain.port)
        assert s is not None and (s.type, s.metadata) == (None, {})
    # Typed with an explicit range: the range wins; type and metadata are recorded.
    with portmgr.allocate(range=RNG, type="cache", metadata={"k": "v"}) as typed:
        assert RNG[0] <= typed.port <= RNG[1]
        s = portmgr.get_service_by_port(typed.port)
        assert s is not None and (s.type, s.metadata) == ("cache", {"k": "v"})
    # An unknown type: nothing allocated, the known types named.
    with pytest.raises(portmgr.InvalidArgument, match="cache"):
        portmgr.allocate(range=RNG, type="nope")
    assert portmgr.leases() == []
    # Bound, typed: the race-free hand-over with the type recorded.
    lease, socks = portmgr.allocate_bound(range=RNG, type="cache")
    try:
        assert socks[0].getsockname()[1] == lease.port
        s = portmgr.get_service_by_port(lease.port)
        assert s is not None and s.type == "cache"
    finally:
        for sock in socks:
            sock.close()
        lease.release()


def test_a_broken_types_config_never_fails_a_plain_allocation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{ not json")
    monkeypatch.setenv("PORTMGR_TYPES", str(broken))
    with portmgr.allocate(range=RNG) as lease:
        assert portmgr.get_by_port(lease.port) is not None
    with pytest.raises(portmgr.PortError):
        portmgr.allocate(range=RNG, type="cache")
