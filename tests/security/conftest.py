"""The security tests run on the stack the fault tests use (tests/faults/world.py): its logs went through outages."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.faults.world import World, shared_world


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with shared_world(tmp_path_factory.mktemp("world")) as w:
        yield w
