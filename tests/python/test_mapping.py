"""The mapping layer from Python: named services with types and metadata, groups,
export and import (issue 6). Explicit ranges here are in 12000-12699; the built-in type
ranges are the real ones (tolerating ports in use there)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

import portmgr
from conftest import run_python, spawn_python, stop

LO, HI = 12000, 12699

BUILTIN = {
    "rest-api": (8080, 8099),
    "grpc": (50050, 50099),
    "websocket": (8100, 8199),
    "database": (5400, 5499),
    "cache": (6300, 6399),
    "analytics": (8200, 8299),
    "security": (8300, 8399),
    "frontend": (3000, 3099),
    "custom": None,
}


@pytest.fixture(autouse=True)
def no_user_types(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Never the user's types config: no PORTMGR_TYPES, an empty XDG_CONFIG_HOME."""
    monkeypatch.delenv("PORTMGR_TYPES", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    yield


@pytest.fixture
def types_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A types config moving rest-api and adding ml-model and a layout, in force via
    PORTMGR_TYPES."""
    p = tmp_path / "types.json"
    p.write_text(
        json.dumps(
            {
                "types": {
                    "rest-api": {"range": "12000-12009", "description": "ours"},
                    "ml-model": {"range": [12010, 12019]},
                },
                "groups": {"pair": [{"name": "web", "offset": 0, "type": "rest-api"}, {"name": "db", "offset": 2}]},
            }
        )
    )
    monkeypatch.setenv("PORTMGR_TYPES", str(p))
    return p


def held(port: int) -> bool:
    return portmgr.get_by_port(port) is not None


# ---------------------------------------------------------------------------------------
# Types


def test_builtin_type_table() -> None:
    types = {t.name: t for t in portmgr.service_types()}
    assert {n: t.range for n, t in types.items()} == BUILTIN
    assert all(t.source == "builtin" for t in types.values())
    assert portmgr.services().layouts() == ["stack"]


@pytest.mark.parametrize("name", [n for n, r in BUILTIN.items() if r is not None])
def test_allocate_by_type_draws_from_its_range(name: str) -> None:
    lo, hi = BUILTIN[name]  # type: ignore[misc]
    try:
        lease = portmgr.allocate(type=name, name=f"svc-{name}")
    except portmgr.PortsExhausted:
        pytest.skip(f"every port of {lo}-{hi} is in use on this host")
    with lease:
        assert lo <= lease.port <= hi
        s = portmgr.get_service(f"svc-{name}")
        assert s is not None and s.type == name and s.port == lease.port
        assert [x.port for x in portmgr.services_by_type(name)] == [lease.port]
    assert portmgr.services_by_type(name) == []


def test_custom_type_is_the_pool_and_explicit_range_wins() -> None:
    with portmgr.allocate(type="custom") as a:
        assert 10300 <= a.port <= 11999  # conftest's PORTMGR_RANGE
    with portmgr.allocate(type="database", range=(12100, 12109)) as b:
        assert 12100 <= b.port <= 12109
        s = portmgr.get_service_by_port(b.port)
        assert s is not None and s.type == "database" and s.name is None


def test_config_override_and_added_type(types_file: Path) -> None:
    types = {t.name: t for t in portmgr.service_types()}
    assert types["rest-api"].range == (12000, 12009) and types["rest-api"].source == str(types_file)
    assert types["rest-api"].description == "ours"
    assert types["ml-model"].range == (12010, 12019)
    assert types["database"].range == (5400, 5499)
    with portmgr.allocate(type="rest-api") as a, portmgr.allocate(type="ml-model") as b:
        assert 12000 <= a.port <= 12009 and 12010 <= b.port <= 12019
    assert sorted(portmgr.services().layouts()) == ["pair", "stack"]
    with portmgr.allocate_group("g", "pair", range=(LO, HI)) as g:
        assert g["db"] - g["web"] == 2 and g.members[0].type == "rest-api"


def test_types_file_given_to_services(tmp_path: Path) -> None:
    p = tmp_path / "t.json"
    p.write_text('{"types": {"grpc": {"range": "12020-12021"}}}')
    svc = portmgr.Services(portmgr.registry(), types=p)
    with svc.allocate(type="grpc") as lease:
        assert lease.port in (12020, 12021)
    # The default handle does not see it.
    assert {t.name: t.range for t in portmgr.service_types()}["grpc"] == (50050, 50099)


def test_broken_config_names_line_and_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "types.json"
    p.write_text('{\n  "types": {\n    "rest-api": { "rnage": "9000-9099" }\n  }\n}\n')
    monkeypatch.setenv("PORTMGR_TYPES", str(p))
    with pytest.raises(portmgr.InvalidArgument, match=r"line 3, column \d+: unknown field `rnage`"):
        portmgr.allocate(type="rest-api")
    with pytest.raises(portmgr.InvalidArgument, match="types.json"):
        portmgr.service_types()
    # Plain allocation does not read the types config.
    with portmgr.allocate() as lease:
        assert held(lease.port)
    assert portmgr.leases() == []


def test_unknown_type() -> None:
    with pytest.raises(portmgr.InvalidArgument, match="unknown service type \"nope\"; known types: analytics"):
        portmgr.allocate(type="nope")
    with pytest.raises(portmgr.InvalidArgument, match="unknown service type"):
        portmgr.services_by_type("nope")
    assert portmgr.leases() == []


# ---------------------------------------------------------------------------------------
# Names and metadata


def test_metadata_round_trip_and_update() -> None:
    with portmgr.allocate(name="api", range=(LO, HI), metadata={"owner": "team-a", "tier": "1"}) as lease:
        s = portmgr.get_service("api")
        assert s is not None
        assert s.metadata == {"owner": "team-a", "tier": "1"}
        assert (s.port, s.ports, s.protocols, s.lease_id, s.state) == (lease.port, [lease.port], "tcp", lease.id, "held")
        assert s.type is None and s.group is None and s.member is None and s.expires_ms is None
        s2 = portmgr.update_metadata("api", {"tier": "2", "health_path": "/hz"}, remove=["owner"])
        assert s2.metadata == {"tier": "2", "health_path": "/hz"}
        assert portmgr.get_service_by_port(lease.port).metadata == s2.metadata  # type: ignore[union-attr]
        # One Service per lease in the full list, metadata included.
        assert [(x.name, x.metadata) for x in portmgr.list_services()] == [("api", s2.metadata)]
    assert portmgr.get_service("api") is None
    with pytest.raises(portmgr.NotFound):
        portmgr.update_metadata("api", {"a": "b"})


def test_metadata_without_name_or_type() -> None:
    with portmgr.allocate(metadata={"k": "v"}, count=2) as lease:
        s = portmgr.get_service_by_port(lease.ports[1])
        assert s is not None and s.ports == sorted(lease.ports) and s.metadata == {"k": "v"} and s.name is None


@pytest.mark.parametrize(
    "meta",
    [{"a=b": "x"}, {"": "x"}, {"k": "line\nbreak"}, {"k" * 129: "v"}, {f"k{i}": "v" for i in range(65)}],
)
def test_bad_metadata_is_rejected_before_allocating(meta: dict[str, str]) -> None:
    with pytest.raises(portmgr.InvalidArgument, match="metadata"):
        portmgr.allocate(name="x", metadata=meta)
    assert portmgr.leases() == []


def test_metadata_must_be_strings() -> None:
    with pytest.raises(TypeError):
        portmgr.allocate(metadata={"k": 1})  # type: ignore[dict-item]
    assert portmgr.leases() == []


def test_names_are_unique_and_get_or_allocate_service() -> None:
    s, lease = portmgr.get_or_allocate_service("db", type="database", range=(LO, HI), metadata={"v": "1"})
    assert lease is not None and s.port == lease.port and s.type == "database" and s.metadata == {"v": "1"}
    with pytest.raises(portmgr.NameInUse) as e:
        portmgr.allocate(name="db", type="database")
    assert e.value.name == "db" and e.value.ports == [lease.port]
    # The second call returns the live service, type and metadata as they were.
    s2, none = portmgr.get_or_allocate_service("db", type="cache", metadata={"v": "2"})
    assert none is None and s2.port == lease.port and s2.type == "database" and s2.metadata == {"v": "1"}
    # Another process sees the same service.
    r = run_python(
        """
        import portmgr
        s, lease = portmgr.get_or_allocate_service("db")
        print(s.port, lease is None, s.owner_pid)
        """
    )
    assert r.returncode == 0, r.stderr
    port, was_none, owner = r.stdout.split()
    assert int(port) == lease.port and was_none == "True" and int(owner) != 0
    lease.release()
    s3, lease3 = portmgr.get_or_allocate_service("db", range=(LO, HI))
    assert lease3 is not None and s3.type is None
    lease3.release()
    with pytest.raises(portmgr.InvalidArgument):
        portmgr.get_or_allocate_service("", range=(LO, HI))


# ---------------------------------------------------------------------------------------
# Groups


def test_group_from_mapping() -> None:
    g = portmgr.allocate_group("ci-17", {"postgres": (0, "database"), "redis": 100}, range=(LO, HI), metadata={"job": "17"})
    with g:
        assert g.name == "ci-17" and len(g) == 2 and "redis" in g and "nope" not in g
        assert g.ports == {"postgres": g.base, "redis": g.base + 100}
        assert list(g.ports) == ["postgres", "redis"]
        assert LO <= g.base and g.base + 100 <= HI
        assert [(m.member, m.name, m.offset, m.port, m.type) for m in g.members] == [
            ("postgres", "ci-17.postgres", 0, g.base, "database"),
            ("redis", "ci-17.redis", 100, g.base + 100, None),
        ]
        members = portmgr.services_by_group("ci-17")
        assert sorted((m.name, m.member, m.group, m.metadata["job"]) for m in members) == [  # type: ignore[index]
            ("ci-17.postgres", "postgres", "ci-17", "17"),
            ("ci-17.redis", "redis", "ci-17", "17"),
        ]
        assert [s.name for s in portmgr.services_by_type("database")] == ["ci-17.postgres"]
        with pytest.raises(KeyError):
            g["nope"]
    assert g.released and portmgr.services_by_group("ci-17") == [] and portmgr.leases() == []
    g.release()  # idempotent


def test_group_from_spec_and_builtin_stack() -> None:
    with portmgr.allocate_group("s", "postgres=0,redis=+100/cache backend:400", range=(LO, HI)) as g:
        assert [(m.member, m.offset, m.type) for m in g.members] == [
            ("postgres", 0, None),
            ("redis", 100, "cache"),
            ("backend", 400, None),
        ]
    with portmgr.allocate_group("stk", range=(LO, HI)) as g:
        assert {m.member: m.offset for m in g.members} == {
            "postgres": 0,
            "redis": 100,
            "clickhouse_http": 200,
            "clickhouse_tcp": 300,
            "backend": 400,
            "auth": 401,
            "frontend": 500,
        }
        assert all(held(p) for p in g.ports.values())


def test_group_is_all_or_nothing() -> None:
    # Range 12200-12300 with a span of 100: the only base is 12200, and 12300 is taken.
    blocker = portmgr.allocate(preferred=12300, required=True, range=(12300, 12300))
    with pytest.raises(portmgr.PortsExhausted, match="no base in 12200-12300"):
        portmgr.allocate_group("aon", {"a": 0, "b": 100}, range=(12200, 12300))
    # The member taken before the miss was given back.
    assert not held(12200)
    assert portmgr.services_by_group("aon") == []
    assert [i.port for i in portmgr.leases()] == [12300]
    blocker.release()
    with portmgr.allocate_group("aon", {"a": 0, "b": 100}, range=(12200, 12300)) as g:
        assert g.ports == {"a": 12200, "b": 12300}


def test_group_errors() -> None:
    rng = (LO, HI)
    with pytest.raises(portmgr.InvalidArgument, match="must not contain '.'"):
        portmgr.allocate_group("a.b", {"x": 0}, range=rng)
    with pytest.raises(portmgr.InvalidArgument, match="same offset"):
        portmgr.allocate_group("g", {"x": 0, "y": 0}, range=rng)
    with pytest.raises(portmgr.InvalidArgument, match="offset -1"):
        portmgr.allocate_group("g", {"x": -1}, range=rng)
    with pytest.raises(portmgr.InvalidArgument, match="at least one member"):
        portmgr.allocate_group("g", {}, range=rng)
    with pytest.raises(portmgr.InvalidArgument, match="no group layout named \"nope\""):
        portmgr.allocate_group("g", "nope", range=rng)
    with pytest.raises(portmgr.InvalidArgument, match="NAME=OFFSET"):
        portmgr.allocate_group("g", "x=0,y", range=rng)
    with pytest.raises(portmgr.InvalidArgument, match="unknown service type"):
        portmgr.allocate_group("g", {"x": (0, "nope")}, range=rng)
    with pytest.raises(portmgr.InvalidArgument, match="too small"):
        portmgr.allocate_group("g", {"x": 0, "y": 100}, range=(12000, 12050))
    with pytest.raises(TypeError, match="layout must be"):
        portmgr.allocate_group("g", [("x", 0)], range=rng)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="layout must be"):
        portmgr.allocate_group("g", {"x": "zero"}, range=rng)  # type: ignore[dict-item]
    with portmgr.allocate(name="g.x", range=rng):
        with pytest.raises(portmgr.NameInUse, match="g.x"):
            portmgr.allocate_group("g", {"x": 0}, range=rng)
    with pytest.raises(portmgr.NotFound):
        portmgr.release_group("g")
    assert portmgr.leases() == []


def test_group_outlives_its_object_until_release_group() -> None:
    g = portmgr.allocate_group("gc", {"a": 0, "b": 1}, range=(LO, HI))
    ports = sorted(g.ports.values())
    del g
    import gc

    gc.collect()
    assert all(held(p) for p in ports)
    assert sorted(portmgr.release_group("gc")) == ports
    assert portmgr.leases() == []
    g2 = portmgr.allocate_group("kept", {"a": 0}, range=(LO, HI))
    assert g2.keep() == g2.ports and g2.released
    assert portmgr.get_by_port(g2["a"]).detached  # type: ignore[union-attr]
    assert portmgr.release_group("kept") == [g2["a"]]


def test_group_inherited_by_fork_is_the_parents() -> None:
    import os

    g = portmgr.allocate_group("fk", {"a": 0, "b": 3}, range=(LO, HI))
    pid = os.fork()
    if pid == 0:  # the child: releasing or dropping the parent's group does nothing
        code = 1
        try:
            g.release()
            del g
            code = 0 if len(portmgr.services_by_group("fk")) == 2 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert not g.released and all(held(p) for p in g.ports.values())
    g.release()
    assert portmgr.leases() == []


def test_concurrent_processes_get_disjoint_groups() -> None:
    code = """
        import sys, portmgr
        g = portmgr.allocate_group(sys.argv[1], {"a": 0, "b": 10, "c": 20}, range=(12000, 12099))
        print(" ".join(str(p) for p in g.ports.values()), flush=True)
        sys.stdin.read()
    """
    kids = [spawn_python(code, f"job{i}") for i in range(4)]
    try:
        got: list[list[int]] = []
        for k in kids:
            assert k.stdout is not None
            line = k.stdout.readline()
            assert line, k.stderr.read() if k.stderr else ""
            got.append([int(x) for x in line.split()])
        flat = [p for ports in got for p in ports]
        assert len(flat) == 12 and len(set(flat)) == 12, got
        for ports in got:
            assert ports[1] - ports[0] == 10 and ports[2] - ports[0] == 20
        assert sorted(s.group for s in portmgr.list_services()) == sorted(f"job{i}" for i in range(4) for _ in range(3))  # type: ignore[type-var]
    finally:
        for k in kids:
            if k.stdin:
                k.stdin.close()
            stop(k)


# ---------------------------------------------------------------------------------------
# Export


def test_export_json_env_nginx() -> None:
    api = portmgr.allocate(name="api", type="rest-api", range=(LO, HI), metadata={"owner": "a"})
    ch = portmgr.allocate(name="clickhouse.http", range=(LO, HI))
    udp = portmgr.allocate(name="dns", proto="udp", range=(LO, HI))
    anon = portmgr.allocate(range=(LO, HI))
    doc = json.loads(portmgr.export("json"))
    assert doc["portmgr_export"] == 1
    assert [s["name"] for s in doc["services"]] == ["api", "clickhouse.http", "dns"]
    assert doc["services"][0] == {
        "name": "api",
        "port": api.port,
        "ports": [api.port],
        "protocols": "tcp",
        "type": "rest-api",
        "group": None,
        "member": None,
        "metadata": {"owner": "a"},
    }
    assert portmgr.export() == portmgr.export("json")
    env = portmgr.export("env")
    assert f"API_PORT={api.port}\n" in env and f"CLICKHOUSE_HTTP_PORT={ch.port}\n" in env
    assert f"DNS_PORT={udp.port}" in env and str(anon.port) not in env
    # The comment import reads the exact name, type and metadata back from.
    assert f'# portmgr {{"metadata":{{"owner":"a"}},"name":"api","type":"rest-api"}}\nAPI_PORT={api.port}\n' in env
    nginx = portmgr.export("nginx")
    assert "location /api/ {" in nginx and f"proxy_pass http://127.0.0.1:{api.port}/;" in nginx
    assert "location = /api/health" in nginx and "proxy_set_header Upgrade" in nginx
    assert f":{udp.port}" not in nginx  # UDP-only: left out with a comment
    with pytest.raises(portmgr.InvalidArgument, match="unknown export format"):
        portmgr.export("yaml")  # type: ignore[arg-type]
    for x in (api, ch, udp, anon):
        x.release()


def test_export_env_name_clash() -> None:
    with portmgr.allocate(name="a-b", range=(LO, HI)), portmgr.allocate(name="a_b", range=(LO, HI)):
        with pytest.raises(portmgr.InvalidArgument, match="a-b.*a_b|a_b.*a-b"):
            portmgr.export("env")


def test_write_and_apply_nginx_dir(tmp_path: Path) -> None:
    d = tmp_path / "nginx"
    with portmgr.allocate(name="web", range=(LO, HI)) as web:
        applied = portmgr.write_nginx_dir(d)
        assert applied.files == ["web.conf"] and not applied.tested and not applied.reloaded
        assert Path(applied.dir) == d
        before = (d / "web.conf").read_text()
        assert f"127.0.0.1:{web.port}" in before
        ok = portmgr.apply_nginx(d, test_command=["true"], reload_command=["true"])
        assert ok.tested and ok.reloaded and ok.files == ["web.conf"]
        skipped = portmgr.apply_nginx(str(d), test_command=[], reload_command=[])
        assert not skipped.tested and not skipped.reloaded
        with portmgr.allocate(name="api", range=(LO, HI)):
            with pytest.raises(portmgr.InvalidArgument, match="failed its test.*restored"):
                portmgr.apply_nginx(d, test_command=["false"], reload_command=["true"])
            # Rolled back: still only web.conf, as it was.
            assert sorted(p.name for p in d.glob("*.conf")) == ["web.conf"]
            assert (d / "web.conf").read_text() == before
            with pytest.raises(portmgr.InvalidArgument, match="reloading nginx failed"):
                portmgr.apply_nginx(d, test_command=["true"], reload_command=["false"])
            assert sorted(p.name for p in d.glob("*.conf")) == ["web.conf"]
    # A directory with a file of the user's: it stays (portmgr writes only its own).
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "mine.conf").write_text("# not portmgr's\n")
    with portmgr.allocate(name="web", range=(LO, HI)):
        assert portmgr.write_nginx_dir(foreign).files == ["web.conf"]
    assert (foreign / "mine.conf").read_text() == "# not portmgr's\n"
    # web is released: its file goes at the next export, the user's stays.
    pruned = portmgr.write_nginx_dir(foreign)
    assert pruned.files == [] and pruned.removed == ["web.conf"]
    assert sorted(p.name for p in foreign.glob("*.conf")) == ["mine.conf"]


# ---------------------------------------------------------------------------------------
# Import


def test_import_round_trip_json_and_env(tmp_path: Path) -> None:
    a = portmgr.allocate(name="api", type="database", range=(LO, HI), metadata={"k": "v"})
    g = portmgr.allocate_group("grp", {"x": 0, "y": 5}, range=(LO, HI))
    before = {s.name: s.port for s in portmgr.list_services()}
    js, env = portmgr.export("json"), portmgr.export("env")
    a.release()
    g.release()
    assert portmgr.leases() == []

    with portmgr.import_services(text=js) as report:
        assert [(s.name, s.status, s.port) for s in report.services] == [(n, "same", p) for n, p in sorted(before.items())]
        assert report.moved == [] and report.failed == []
        assert sorted(lease.port for lease in report.leases) == sorted(before.values())
        s = portmgr.get_service("api")
        assert s is not None and s.type == "database" and s.metadata == {"k": "v"}
        assert sorted(m.name for m in portmgr.services_by_group("grp")) == ["grp.x", "grp.y"]  # type: ignore[type-var]
    assert portmgr.leases() == []

    f = tmp_path / ".env.dynamic"
    f.write_text(env)
    for src in (f, str(f)):
        report = portmgr.import_services(src)
        assert {s.name: s.port for s in report.services} == before
        assert portmgr.get_service("api").metadata == {"k": "v"}  # type: ignore[union-attr]
        report.release()
        report.release()
    assert portmgr.leases() == []


def test_import_falls_back_and_reports(tmp_path: Path) -> None:
    # A plain .env (no portmgr comments): WEB_PORT becomes "web"; other variables ignored.
    text = "WEB_PORT=12300\nDB_PORT=12301\nOTHER=1\nLIVE_PORT=12302\n"
    taker = portmgr.allocate(preferred=12300, required=True, range=(12300, 12300))
    live = portmgr.allocate(name="live", range=(12400, 12409))
    report = portmgr.import_services(text=text, format="env", range=(12300, 12310))
    by = {s.name: s for s in report.services}
    assert [s.name for s in report.services] == ["web", "db", "live"]
    assert by["db"].status == "same" and by["db"].port == 12301
    assert by["web"].status == "moved" and by["web"].previous_port == 12300
    assert by["web"].port is not None and 12303 <= by["web"].port <= 12310  # avoids every port the file names
    assert "12300 is taken" in (by["web"].reason or "")
    assert [s.name for s in report.moved] == ["web"]
    assert by["live"].status == "existing" and by["live"].port == live.port
    assert "already live" in (by["live"].reason or "")
    assert sorted(lease.name or "" for lease in report.leases) == ["db", "web"]
    report.release()
    taker.release()
    live.release()


def test_import_failures_are_reported_not_raised() -> None:
    doc: dict[str, Any] = {
        "portmgr_export": 1,
        "services": [
            {"name": "good", "port": 12500},
            {"name": "typed", "port": 12501, "type": "no-such-type"},
        ],
    }
    with portmgr.import_services(text=json.dumps(doc)) as report:
        by = {s.name: s for s in report.services}
        assert by["good"].status == "same" and by["good"].port == 12500
        assert by["typed"].status == "failed" and by["typed"].port is None
        assert "unknown service type" in (by["typed"].reason or "")
        assert [s.name for s in report.failed] == ["typed"]
        assert [lease.port for lease in report.leases] == [12500]
    # A taken port with nowhere to fall back to.
    taker = portmgr.allocate(preferred=12502, required=True, range=(12502, 12502))
    doc["services"] = [{"name": "full", "port": 12502}, {"name": "ok", "port": 12503}]
    with portmgr.import_services(text=json.dumps(doc), range=(12502, 12502)) as report:
        full, ok = report.services
        assert full.status == "failed" and full.port is None and "12502 is taken" in (full.reason or "")
        assert ok.status == "same" and ok.port == 12503
        assert held(12503)
    assert not held(12503)
    taker.release()


def test_import_errors(tmp_path: Path) -> None:
    with pytest.raises(portmgr.InvalidArgument, match="path or text"):
        portmgr.import_services()
    with pytest.raises(portmgr.InvalidArgument, match="path or text"):
        portmgr.import_services(tmp_path / "x", text="A_PORT=1")
    with pytest.raises(portmgr.PortOSError, match="reading the import file"):
        portmgr.import_services(tmp_path / "missing.env")
    with pytest.raises(portmgr.InvalidArgument, match="unknown import format"):
        portmgr.import_services(text="A_PORT=12000", format="yaml")  # type: ignore[arg-type]
    with pytest.raises(portmgr.InvalidArgument, match="line 2"):
        portmgr.import_services(text='{"portmgr_export": 1,\n "services": [}')
    assert portmgr.leases() == []


# ---------------------------------------------------------------------------------------
# The GIL, other registries


def test_services_on_another_registry(tmp_path: Path) -> None:
    other = portmgr.Registry(tmp_path / "other")
    svc = portmgr.Services(other)
    assert svc.path == other.path
    with svc.allocate(name="x", range=(LO, HI), metadata={"a": "b"}) as lease:
        assert svc.by_name("x").metadata == {"a": "b"}  # type: ignore[union-attr]
        assert portmgr.get_service("x") is None and other.get_by_port(lease.port) is not None
        assert [s.name for s in svc.list_named()] == ["x"]


def test_gil_is_released_while_mapping_calls_wait(registry_dir: Path) -> None:
    svc = portmgr.Services(portmgr.Registry(registry_dir, lock_timeout=0.5))
    svc.list()  # create the registry files
    child = spawn_python(
        """
        import fcntl, os, sys
        f = open(os.path.join(os.environ["PORTMGR_DIR"], "registry.lock"), "r+")
        fcntl.flock(f, fcntl.LOCK_EX)
        print("locked", flush=True)
        sys.stdin.read()
        """
    )
    errors: list[Any] = []

    def blocked_call() -> None:
        try:
            svc.allocate_group("g", {"a": 0}, range=(LO, HI))
        except portmgr.LockTimeout as e:
            errors.append(e)

    def count_while(busy: threading.Thread) -> int:
        n = 0
        while busy.is_alive():
            n += 1
            time.sleep(0)
        return n

    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "locked"
        idle = threading.Thread(target=time.sleep, args=(0.5,))
        idle.start()
        free_rate = count_while(idle)
        t = threading.Thread(target=blocked_call)
        t.start()
        blocked_rate = count_while(t)
        assert len(errors) == 1
        assert blocked_rate >= 0.25 * free_rate, (blocked_rate, free_rate)
    finally:
        if child.stdin:
            child.stdin.close()
        stop(child)


# ---------------------------------------------------------------------------------------
# A real nginx (skipped when there is none): apply_nginx tests the export with nginx -t,
# and a request through nginx reaches the backend on the service's allocated port.


def _backend(port: int, name: str) -> Any:
    import http.server

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = f"backend {name} saw {self.path} prefix={self.headers.get('X-Forwarded-Prefix')}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def _get(port: int, path: str) -> tuple[int, str]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""


def test_real_nginx_routes_to_allocated_ports() -> None:
    import os
    import shutil
    import subprocess
    import tempfile

    nginx = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.path.exists(p)), None)
    if nginx is None:
        pytest.skip("nginx is not installed")
    rng = (12600, 12699)
    front = portmgr.allocate(name="nginx", range=rng)
    web = portmgr.allocate(name="web", type="rest-api", range=rng)
    backends = [_backend(web.port, "web")]
    prefix = Path(tempfile.mkdtemp(prefix="portmgr-py-nginx-"))
    root = os.geteuid() == 0
    if root:
        prefix.chmod(0o755)  # nginx's workers drop to nobody
    conf = prefix / "nginx.conf"
    p = str(prefix)
    conf.write_text(
        f"daemon off;\n{'user nobody nogroup;' if root else ''}\nworker_processes 1;\npid {p}/nginx.pid;\n"
        f"error_log {p}/error.log info;\nevents {{ worker_connections 64; }}\nhttp {{\n"
        f"  access_log {p}/access.log;\n  client_body_temp_path {p}/cb;\n  proxy_temp_path {p}/proxy;\n"
        f"  fastcgi_temp_path {p}/fcgi;\n  uwsgi_temp_path {p}/uwsgi;\n  scgi_temp_path {p}/scgi;\n"
        f"  server {{\n    listen 127.0.0.1:{front.port};\n    include {p}/services/*.conf;\n  }}\n}}\n"
    )
    base = [nginx, "-e", f"{p}/error.log", "-p", f"{p}/", "-c", str(conf)]
    server = None
    try:
        applied = portmgr.apply_nginx(prefix / "services", test_command=base + ["-t"], reload_command=[])
        assert applied.tested and not applied.reloaded and applied.files == ["nginx.conf", "web.conf"]
        server = subprocess.Popen(base, stdin=subprocess.DEVNULL)
        portmgr.wait_listening(front.port, timeout=10)
        status, body = _get(front.port, "/web/hello")
        assert status == 200 and body == "backend web saw /hello prefix=/web", body
        status, body = _get(front.port, "/web/health")
        assert status == 200 and body.startswith("backend web saw /health"), body

        # A new service: exported, tested, reloaded; nginx routes to it.
        api = portmgr.allocate(name="api", range=rng)
        backends.append(_backend(api.port, "api"))
        applied = portmgr.apply_nginx(
            prefix / "services", test_command=base + ["-t"], reload_command=base + ["-s", "reload"]
        )
        assert applied.tested and applied.reloaded and "api.conf" in applied.files
        # Old workers may take a connection or two while they wind down: wait for the
        # new configuration to answer three times in a row.
        want, streak, last = (200, "backend api saw /x prefix=/api"), 0, (0, "")
        deadline = time.monotonic() + 15
        while streak < 3 and time.monotonic() < deadline:
            last = _get(front.port, "/api/x")
            streak = streak + 1 if last == want else 0
            time.sleep(0.05)
        assert streak == 3, last
        api.release()
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=10)
        for b in backends:
            b.shutdown()
            b.server_close()
        front.release()
        web.release()
        shutil.rmtree(prefix, ignore_errors=True)


def test_import_reads_only_regular_size_capped_files(tmp_path: Path) -> None:
    """Issue 11.8 in Python: the core reads the import file. /dev/zero does not grow
    memory without end, and a FIFO nobody writes to does not hang."""
    import os

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for bad in ("/dev/zero", str(fifo), str(tmp_path)):
        t0 = time.monotonic()
        with pytest.raises(portmgr.InvalidArgument, match="regular file"):
            portmgr.import_services(bad)
        assert time.monotonic() - t0 < 5, bad
    big = tmp_path / "big.env"
    big.write_bytes(b"# x\n" * (5 * 1024 * 1024))  # 20 MiB: over the cap
    with pytest.raises(portmgr.InvalidArgument, match="MiB"):
        portmgr.import_services(big)
