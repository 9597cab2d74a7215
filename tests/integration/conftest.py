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

# FISCALFLOW_TEST_SLOT=N (1-9) gives a test session its own ports, directory and database, so
# several sessions (developers working side by side) never tear down each other's stack.
_SLOT = int(os.environ.get("FISCALFLOW_TEST_SLOT", "0") or 0)
SLOT_OFFSET = _OFF = _SLOT * 100
TEST_LOCAL_DIR = PROJECT_ROOT / (".local-test" + (f"-{_SLOT}" if _SLOT else ""))

# Test ports, away from the development stack's defaults (19092, 18333, 12201-12203).
TEST_ENV = {
    "FISCALFLOW_LOCAL_DIR": str(TEST_LOCAL_DIR),
    "FISCALFLOW_BOOTSTRAP_SERVERS": f"127.0.0.1:{29092 + _OFF}",
    "FISCALFLOW_S3_ENDPOINT": f"http://127.0.0.1:{28333 + _OFF}",
    "FISCALFLOW_SFTP_REGIONS": (f"north=127.0.0.1:{22201 + _OFF},central=127.0.0.1:{22202 + _OFF},"
                                f"south=127.0.0.1:{22203 + _OFF}"),
    "FISCALFLOW_PG_DSN": "postgresql://postgres@127.0.0.1:5432/fiscalflow_test" + (f"_{_SLOT}" if _SLOT else ""),
    "FISCALFLOW_BROKER_STORAGE": "memory",
    "FISCALFLOW_INGEST_PORT": str(28080 + _OFF),
    "FISCALFLOW_REPORT_PORT": str(28081 + _OFF),
    # One database serves every integration test: an ingest stage's reconciler would re-drive
    # other tests' records into its own test's topics.  Tests of the reconciler turn it on.
    "FISCALFLOW_REDRIVE_INTERVAL_S": "0",
    # Tansu holds every JoinGroup for half the session timeout: 1 s here instead of the default's
    # 3 s, in every group join of the integration tests.  Heartbeats go every 500 ms (a quarter, at least
    # 500): a member may miss three in a row; the fourth races its expiry.
    "FISCALFLOW_SESSION_TIMEOUT_MS": "2000",
}


def _fresh_stack(local_dir: Path, settings: Settings) -> None:
    """Stop what a crashed earlier session left running (by its state file), then start clean: the
    session's database too, so what earlier runs left unfinished in it (on a machine that keeps its
    PostgreSQL, such as a CI runner) cannot change what this run's tests see."""
    from tests.support.stacks import drop_database
    from tooling.stack import LocalStack

    if local_dir.exists():
        LocalStack(settings).down()
        shutil.rmtree(local_dir)
    drop_database(settings)


@pytest.fixture(scope="session")
def stack_settings() -> Iterator[Settings]:
    """Settings of the running test stack (broker, PostgreSQL, S3, SFTP regions; no services)."""
    from tooling.stack import LocalStack

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
