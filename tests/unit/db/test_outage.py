"""A PostgreSQL outage is a transient failure of ``postgres`` (retried, and its breaker learns);
any other database error stays what it is (a verdict or a bug, never retried as an outage)."""

from __future__ import annotations

import socket
from typing import Any

import asyncpg
import pytest

from shared.db.archive import archive, archived_by_uuid
from shared.db.jobs import add_members
from shared.db.outage import outage_is_transient
from shared.db.records import Transition, apply_transitions, lookup
from shared.domain.records import RecordStatus
from shared.runtime.errors import TransientError

OUTAGES = [ConnectionRefusedError(111, "Connection refused"), ConnectionResetError("reset by peer"),
           TimeoutError(), asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
           asyncpg.CannotConnectNowError("the database system is starting up"),
           asyncpg.InterfaceError("pool is closed")]
VERDICTS = [asyncpg.UniqueViolationError("duplicate key value"), asyncpg.PostgresSyntaxError("syntax error"),
            asyncpg.DataError("invalid input syntax for type uuid"), ValueError("a bug")]


@pytest.mark.parametrize("exc", OUTAGES, ids=lambda e: type(e).__name__)
def test_a_connection_level_failure_is_transient_for_postgres(exc: Exception) -> None:
    with pytest.raises(TransientError) as err, outage_is_transient():
        raise exc
    assert err.value.downstream == "postgres" and str(err.value).startswith("postgres: ")
    assert err.value.__cause__ is exc


@pytest.mark.parametrize("exc", VERDICTS, ids=lambda e: type(e).__name__)
def test_any_other_error_is_left_as_it_is(exc: Exception) -> None:
    with pytest.raises(type(exc)) as err, outage_is_transient():
        raise exc
    assert err.value is exc


class _Failing:
    """A connection whose every statement fails with ``exc``."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    async def fetch(self, *args: Any) -> Any:
        raise self.exc

    async def execute(self, *args: Any) -> Any:
        raise self.exc

    def transaction(self) -> Any:
        raise self.exc


def _transition() -> Transition:
    return Transition("r1", RecordStatus.ARCHIVED, (RecordStatus.DOWNLOADED,), "store", "store/0", "r1:archived")


ADAPTERS = {
    "lookup": lambda db: lookup(db, ["r1"]),
    "apply_transitions": lambda db: apply_transitions(db, [_transition()]),
    "archived_by_uuid": lambda db: archived_by_uuid(db, ["U1"]),
    "archive": lambda db: archive(db, [_transition()]),
    "add_members": lambda db: add_members(db, [("6f1d3c2e-0a4b-4c55-9a51-1f5a0d0f2a10", "r1")]),
}


@pytest.mark.parametrize("call", ADAPTERS.values(), ids=ADAPTERS.keys())
async def test_the_adapters_a_stage_calls_raise_transient_errors_themselves(call: Any) -> None:
    with pytest.raises(TransientError, match=r"^postgres: "):
        await call(_Failing(ConnectionResetError("reset by peer")))
    with pytest.raises(asyncpg.DataError):
        await call(_Failing(asyncpg.DataError("invalid input syntax for type uuid")))


async def test_a_pool_whose_server_is_down_fails_transiently_when_it_connects() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pool = await asyncpg.create_pool(f"postgresql://u@127.0.0.1:{port}/db", min_size=0, max_size=1, timeout=5)
    try:
        with pytest.raises(TransientError) as err:
            await apply_transitions(pool, [_transition()])
        assert err.value.downstream == "postgres"
    finally:
        await pool.close()
