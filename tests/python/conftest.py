"""Shared test setup: every test gets its own registry directory and a port range of
its own, so this suite never touches the user's real registry and stays out of the
way of other suites running at the same time."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Iterator

import pytest

# Ports: the Python suite owns 10000-12699, below the kernel's ephemeral range (32768-60999)
# and outside every other suite's: 10300-11999 is the default pool (RANGE, test_stress.py)
# with the exact ports of test_api.py, test_errors.py and test_plugin.py inside it;
# 10000-10299 is outside the pool, for exact ports that must not meet a random
# allocation's socket (test_lease_handle.py 10100-10199, test_registry_features.py
# 10200-10299); test_mapping.py's explicit ranges are 12000-12699. Other suites: the
# fuzz replay 12700-12999, the CLI 13000-13999, 15000-15999
# and 31620-32767, reliability 14000-14999 and 29800-29999, Rust core/C/multiprocess
# 16000-31601.
RANGE = (10300, 11999)
RANGE_STR = f"{RANGE[0]}-{RANGE[1]}"


@pytest.fixture(autouse=True)
def registry_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh registry directory for this test, exported as PORTMGR_DIR (so the default
    registry and every subprocess use it), and the default pool set to RANGE."""
    d = tmp_path / "registry"
    monkeypatch.setenv("PORTMGR_DIR", str(d))
    monkeypatch.setenv("PORTMGR_RANGE", RANGE_STR)
    yield d


def run_python(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter (same environment), return the finished process."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=os.environ.copy(),
    )


def spawn_python(code: str, *args: str) -> subprocess.Popen[str]:
    """Start `code` in a fresh interpreter with pipes; the caller waits for it."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )


def stop(child: subprocess.Popen[str]) -> None:
    """Kill `child` if it still runs, reap it and close its pipes."""
    if child.poll() is None:
        child.kill()
    child.wait()
    for f in (child.stdin, child.stdout, child.stderr):
        if f is not None:
            f.close()
