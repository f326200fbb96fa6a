"""A tiny recording plugin (``-p portmgr_record``): every value a fixture named in
PORTMGR_RECORD_FIXTURES gets, with whether the registry holds it at that moment, appended
as JSON lines to PORTMGR_RECORD_FILE. Used to show where a third-party suite's port
fixture values come from, without touching the suite."""

from __future__ import annotations

import json
import os
from typing import Any, Iterator

import pytest


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef: Any, request: pytest.FixtureRequest) -> Iterator[None]:
    value = yield
    names = os.environ.get("PORTMGR_RECORD_FIXTURES", "unused_tcp_port").split()
    if fixturedef.argname in names and isinstance(value, int):
        import portmgr

        leased = portmgr.get_by_port(value) is not None
        with open(os.environ["PORTMGR_RECORD_FILE"], "a") as f:
            f.write(json.dumps({"fixture": fixturedef.argname, "port": value, "leased": leased, "test": request.node.nodeid}) + "\n")
    return value
