"""The exception hierarchy: each core error code raises its class, with its details."""

from __future__ import annotations

import errno
import os
import pickle
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import portmgr
from portmgr import errors
from conftest import spawn_python, stop

CODES = {
    errors.InvalidArgument: 1,
    errors.PortsExhausted: 2,
    errors.PortInUse: 3,
    errors.NameInUse: 3,
    errors.NotFound: 4,
    errors.NotOwner: 5,
    errors.PortTimeout: 6,
    errors.LockTimeout: 6,
    errors.RegistryCorrupt: 7,
    errors.InsecureDirectory: 8,
    errors.PortOSError: 9,
    errors.PortPermissionError: 9,
    errors.InternalError: 10,
}


def test_hierarchy() -> None:
    for cls, code in CODES.items():
        assert issubclass(cls, portmgr.PortError) and cls.code == code, cls
    assert issubclass(errors.InvalidArgument, ValueError)
    assert issubclass(errors.NotFound, LookupError)
    assert issubclass(errors.PortTimeout, TimeoutError)
    assert issubclass(errors.LockTimeout, errors.PortTimeout)
    assert issubclass(errors.NameInUse, errors.PortInUse)
    assert issubclass(errors.RegistryCorrupt, errors.RegistryError)
    assert issubclass(errors.InsecureDirectory, errors.RegistryError)
    assert issubclass(errors.PortOSError, OSError)
    assert issubclass(errors.PortPermissionError, PermissionError)
    assert issubclass(errors.PortFileNotFoundError, FileNotFoundError)
    assert issubclass(errors.PortConnectionRefusedError, ConnectionRefusedError)
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), portmgr.PortError), name


def test_os_errors_pick_the_matching_builtin_subclass() -> None:
    e = errors._from_native(9, "opening x: Permission denied", errno.EACCES, {"context": "opening x"})
    assert isinstance(e, PermissionError) and isinstance(e, portmgr.PortError)
    assert e.errno == errno.EACCES and e.context == "opening x" and str(e) == "opening x: Permission denied"  # type: ignore[attr-defined]
    e2 = errors._from_native(9, "odd", errno.EADDRNOTAVAIL, {})
    assert type(e2) is errors.PortOSError and e2.errno == errno.EADDRNOTAVAIL  # type: ignore[attr-defined]
    e3 = errors._from_native(42, "from the future", None, {})
    assert isinstance(e3, errors.InternalError)


@pytest.mark.parametrize(
    "exc",
    [
        errors.PortInUse("port 5 is in use", port=5, holder="pid 1"),
        errors.NameInUse("name", name="db", ports=[1, 2]),
        errors.NotOwner("not yours", pid=42),
        errors.LockTimeout("slow"),
        errors.InsecureDirectory("unsafe", path="/x", reason="mode 777"),
        errors._from_native(9, "no such file", errno.ENOENT, {"context": "c"}),
    ],
)
def test_exceptions_pickle_with_their_details(exc: portmgr.PortError) -> None:
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is type(exc) and str(back) == str(exc) and back.__dict__ == exc.__dict__
    if isinstance(exc, OSError):
        assert back.errno == exc.errno  # type: ignore[attr-defined]


def test_exhausted() -> None:
    with portmgr.allocate(range=(11100, 11101), count=2):
        with pytest.raises(portmgr.PortsExhausted) as e:
            portmgr.allocate(range=(11100, 11101))
    assert "11100-11101" in str(e.value) and e.value.code == 2


def test_name_in_use() -> None:
    with portmgr.allocate(name="db") as lease:
        with pytest.raises(portmgr.NameInUse) as e:
            portmgr.allocate(name="db")
        assert e.value.name == "db" and e.value.ports == [lease.port]
        assert isinstance(e.value, portmgr.PortInUse)


def test_not_found() -> None:
    with pytest.raises(portmgr.NotFound):
        portmgr.release(11200)
    with pytest.raises(portmgr.NotFound):
        portmgr.release_name("nobody")
    with pytest.raises(LookupError):
        portmgr.renew(11200, 10)


def test_not_owner_while_the_holder_lives() -> None:
    child = spawn_python(
        """
        import sys, portmgr
        lease = portmgr.allocate(name="theirs")
        print(lease.port, flush=True)
        sys.stdin.read()     # hold until the parent closes stdin
        """
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        port = int(child.stdout.readline())
        with pytest.raises(portmgr.NotOwner) as e:
            portmgr.release(port)
        assert e.value.pid == child.pid
        with pytest.raises(portmgr.NotOwner):
            portmgr.release_name("theirs")
        assert portmgr.get_by_port(port) is not None
        child.stdin.close()
        assert child.wait(timeout=30) == 0
    finally:
        stop(child)
    assert portmgr.get_by_port(port) is None  # the owner is gone


def test_lock_timeout_names_the_holder(registry_dir: Path) -> None:
    reg = portmgr.Registry(registry_dir, lock_timeout=0.2)  # creates registry.lock
    child = spawn_python(
        """
        import fcntl, os, sys
        f = open(os.path.join(os.environ["PORTMGR_DIR"], "registry.lock"), "r+")
        fcntl.flock(f, fcntl.LOCK_EX)
        print("locked", flush=True)
        sys.stdin.read()
        """
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().strip() == "locked"
        t0 = time.monotonic()
        with pytest.raises(portmgr.LockTimeout) as e:
            reg.allocate()
        with pytest.raises(portmgr.LockTimeout):
            portmgr.Registry(registry_dir, lock_timeout=0.2)  # the open waits no longer either
        assert time.monotonic() - t0 < 5
        assert isinstance(e.value, TimeoutError) and e.value.code == 6
        assert str(child.pid) in str(e.value)
        child.stdin.close()
        child.wait(timeout=30)
    finally:
        stop(child)
    with reg.allocate():
        pass


def test_insecure_directory(tmp_path: Path) -> None:
    d = tmp_path / "open"
    d.mkdir()
    os.chmod(d, 0o777)
    with pytest.raises(portmgr.InsecureDirectory) as e:
        portmgr.Registry(d)
    assert isinstance(e.value, portmgr.RegistryError) and e.value.path and e.value.reason
    link = tmp_path / "link"
    good = tmp_path / "good"
    good.mkdir(mode=0o700)
    link.symlink_to(good)
    with pytest.raises(portmgr.InsecureDirectory):
        portmgr.Registry(link)


def test_os_error_from_the_registry(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(portmgr.PortError) as e:
        portmgr.Registry(f / "registry")
    assert isinstance(e.value, OSError) and e.value.errno == errno.ENOTDIR
    assert isinstance(e.value, NotADirectoryError)


def test_corrupt_registry_with_live_owners(registry_dir: Path) -> None:
    holder = portmgr.Registry(registry_dir)
    lease = holder.allocate()
    db = registry_dir / "registry.db"
    with open(db, "r+b") as f:
        f.write(b"GARBAGE!")
    with pytest.raises(portmgr.RegistryCorrupt) as e:
        portmgr.Registry(registry_dir).list()
    assert isinstance(e.value, portmgr.RegistryError) and e.value.code == 7
    assert e.value.path.endswith("registry.db") and e.value.reason  # type: ignore[attr-defined]
    try:
        lease.release()
    except portmgr.RegistryCorrupt:
        pass  # the file it was recorded in is gone; the lease dies with this process


def test_bind_errors_surface_as_os_errors() -> None:
    # A probe address that is not on this host: EADDRNOTAVAIL, an OS error.
    with pytest.raises(portmgr.PortError) as e:
        portmgr.is_free(11300, host="192.0.2.1")
    assert isinstance(e.value, OSError) and e.value.errno == errno.EADDRNOTAVAIL
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        assert not portmgr.is_free(s.getsockname()[1])


# Issue 11 (7, 10, 13): directories, TTLs and arguments the core refuses, and how.


def test_empty_portmgr_dir_is_an_error_not_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    xdg = tmp_path / "xdg"
    xdg.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(xdg))
    monkeypatch.setenv("PORTMGR_DIR", "")
    msg = f"PORTMGR_DIR is set but empty: unset it to use the default ({xdg / 'portmgr'}) or give a directory"
    for call in (portmgr.Registry, portmgr.Services, portmgr.default_dir, portmgr.allocate, portmgr.leases):
        with pytest.raises(portmgr.InvalidArgument) as e:
            call()
        assert msg in str(e.value), call
    assert not (xdg / "portmgr").exists(), "an empty PORTMGR_DIR opened the default registry"
    # The command line says the same (an invalid argument: status 2).
    out = subprocess.run([sys.executable, "-m", "portmgr", "list"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and msg in out.stderr, (out.returncode, out.stderr)
    with pytest.raises(portmgr.InvalidArgument):
        portmgr.Registry("")


def test_a_directory_not_dedicated_to_portmgr_is_refused(tmp_path: Path) -> None:
    for name, mode in [("etc", 0o755), ("home", 0o700)]:
        shared = tmp_path / name
        shared.mkdir()
        (shared / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
        os.chmod(shared, mode)
        with pytest.raises(portmgr.InsecureDirectory, match="dedicated"):
            portmgr.Registry(shared)
        assert os.listdir(shared) == ["passwd"], "portmgr wrote into a shared directory"
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o700)
    portmgr.Registry(mine).list()
    (mine / "notes.txt").write_text("a registry stays usable when files appear in it\n")
    portmgr.Registry(mine).list()


def test_a_nul_byte_in_the_path_is_an_invalid_argument() -> None:
    with pytest.raises(portmgr.InvalidArgument, match="NUL"):
        portmgr.Registry("/tmp/a\0b")


def test_ttls_below_one_second_are_refused() -> None:
    for ttl in (1e-9, 0.001, 0.5):
        with pytest.raises(portmgr.InvalidArgument, match="at least 1 s"):
            portmgr.allocate(ttl=ttl)
    assert portmgr.leases() == []
    with portmgr.allocate(name="min-ttl", ttl=60) as lease:
        for renew in (lambda: lease.renew(0.5), lambda: portmgr.renew(lease.port, 0.5),
                      lambda: portmgr.renew_name("min-ttl", 0.001)):
            with pytest.raises(portmgr.InvalidArgument, match="at least 1 s"):
                renew()
        lease.renew(1)


def test_range_bounds_must_be_ints() -> None:
    with pytest.raises(TypeError, match="bounds must be ints.*float"):
        portmgr.allocate(range=(10200.0, 10210.0))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="bounds must be ints"):
        portmgr.scan(("10200", 10210))  # type: ignore[arg-type]


def test_a_huge_name_is_not_echoed_whole() -> None:
    with pytest.raises(portmgr.InvalidArgument) as e:
        portmgr.allocate(name="n" * 100_000)
    assert len(str(e.value)) < 300 and "100000 bytes" in str(e.value)
