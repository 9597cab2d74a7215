"""The integration test stack: real servers, brought up once per session in an isolated local dir.

The session exports its FISCALFLOW_* variables, so every subprocess a test starts (services,
CLI calls) sees the test stack, never the developer's.  Services are not started here: tests
that need them start what they need.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shared.settings import PROJECT_ROOT, Settings

TEST_LOCAL_DIR = PROJECT_ROOT / ".local-test"

# Test ports, away from the development stack's defaults (19092, 18333, 12201-12203).
TEST_ENV = {
    "FISCALFLOW_LOCAL_DIR": str(TEST_LOCAL_DIR),
    "FISCALFLOW_BOOTSTRAP_SERVERS": "127.0.0.1:29092",
    "FISCALFLOW_S3_ENDPOINT": "http://127.0.0.1:28333",
    "FISCALFLOW_SFTP_REGIONS": "north=127.0.0.1:22201,central=127.0.0.1:22202,south=127.0.0.1:22203",
    "FISCALFLOW_PG_DSN": "postgresql://postgres@127.0.0.1:5432/fiscalflow_test",
    "FISCALFLOW_BROKER_STORAGE": "memory",
}


def _fresh_stack(local_dir: Path, settings: Settings) -> None:
    """Stop what a crashed earlier session left running (by its state file), then start clean."""
    from shared.stack import LocalStack

    if local_dir.exists():
        LocalStack(settings).down()
        shutil.rmtree(local_dir)


@pytest.fixture(scope="session")
def stack_settings() -> Iterator[Settings]:
    """Settings of the running test stack (broker, PostgreSQL, S3, SFTP regions; no services)."""
    from shared.stack import LocalStack

    with pytest.MonkeyPatch.context() as mp:
        for name in [n for n in os.environ if n.startswith("FISCALFLOW_")]:
            mp.delenv(name)  # a developer's own stack settings must not leak into the tests
        for name, value in TEST_ENV.items():
            mp.setenv(name, value)
        settings = Settings()
        _fresh_stack(TEST_LOCAL_DIR, settings)
        stack = LocalStack(settings)
        stack.up(services=())
        try:
            yield settings
        finally:
            stack.down()


@pytest.fixture
def unique_name() -> Callable[[str], str]:
    """Names no other test (or earlier run) uses: topics, groups, S3 keys, remote paths."""
    run = uuid.uuid4().hex[:8]

    def make(prefix: str = "t") -> str:
        return f"{prefix}-{run}-{uuid.uuid4().hex[:6]}"

    return make
