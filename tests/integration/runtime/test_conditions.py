"""A halted or paused replica publishes its condition in PostgreSQL (what the job API reads) and
clears it when the condition ends, on the real broker and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import asyncpg
import pytest

from shared.db import conditions
from shared.db.migrate import migrate
from shared.runtime.condition import REFRESH_S
from tests.integration.runtime.conftest import Namespace
from tests.integration.runtime.test_runtime import _readyz

pytestmark = pytest.mark.integration


def _rows(ns: Namespace) -> list[conditions.StageConditionRow]:
    async def q() -> list[conditions.StageConditionRow]:
        conn = await asyncpg.connect(ns.settings.pg_dsn.get_secret_value())
        try:
            await migrate(conn)  # the stage may not have created the table yet
            return await conditions.current(conn, ns.ns)
        finally:
            await conn.close()
    return asyncio.run(q())


def _wait_rows(ns: Namespace, ok: Callable[[list[conditions.StageConditionRow]], bool],
               timeout: float) -> list[conditions.StageConditionRow]:
    deadline = time.monotonic() + timeout
    rows = _rows(ns)
    while not ok(rows) and time.monotonic() < deadline:
        time.sleep(0.2)
        rows = _rows(ns)
    return rows


def test_a_halted_replica_publishes_why_refreshes_it_and_clears_it_when_stopped(namespace: Namespace) -> None:
    namespace.produce([{"id": f"bad{i}", "permanent": True} for i in range(100)])
    stage = namespace.stage("--max-in-flight", "4", env={"FISCALFLOW_REJECT_RATIO_WINDOW": "20",
                                                         "FISCALFLOW_REJECT_RATIO_THRESHOLD": "0.5",
                                                         "FISCALFLOW_REPLICA_ID": "h"})
    rows = _wait_rows(namespace, lambda rs: bool(rs), timeout=30)
    assert len(rows) == 1, rows
    row = rows[0]
    assert (row.stage, row.replica, row.state) == ("validate", "h", "halted")
    assert "dead letters" in row.reason and "TEST_PERMANENT" in row.reason and "restart" in row.reason
    _, body = _readyz(str(stage.log.parent), "h")
    assert body["condition"] == {"state": "halted", "reason": row.reason}
    # While it stays halted the row is refreshed (readers drop rows not refreshed for a while).
    refreshed = _wait_rows(namespace, lambda rs: bool(rs) and rs[0].updated_at > row.updated_at, timeout=15)
    assert refreshed and refreshed[0].since == row.since and refreshed[0].updated_at > row.updated_at
    assert stage.terminate() == 0
    assert _rows(namespace) == [], "a stopped replica is no longer reported halted"


def test_a_paused_replica_publishes_the_downstream_and_clears_it_when_it_resumes(namespace: Namespace) -> None:
    # "s3" (a stage-wide downstream) fails while a marker file exists: the breaker opens and the
    # stage pauses; once the file is gone a probe succeeds and the stage resumes by itself.
    down = namespace.tmp / "s3-down"
    down.touch()
    count = 12
    namespace.produce([{"id": f"s{i}", "fail_while": str(down), "downstream": "s3"} for i in range(count)])
    namespace.stage("--max-in-flight", "4", env={"FISCALFLOW_BREAKER_RESET_S": "2", "FISCALFLOW_REPLICA_ID": "p"})
    rows = _wait_rows(namespace, lambda rs: bool(rs), timeout=30)
    assert [(r.replica, r.state) for r in rows] == [("p", "paused")], rows
    assert rows[0].reason.startswith("paused: s3 down") and "s3-down exists" in rows[0].reason
    down.unlink()
    assert len(namespace.wait_sink(count, timeout=60)) == count
    assert _wait_rows(namespace, lambda rs: not rs, timeout=15) == [], "a resumed stage is no longer reported"


def test_a_replica_killed_while_halted_stops_looking_halted_once_its_row_is_stale(namespace: Namespace) -> None:
    namespace.produce([{"id": f"bad{i}", "permanent": True} for i in range(100)])
    stage = namespace.stage("--max-in-flight", "4", env={"FISCALFLOW_REJECT_RATIO_WINDOW": "20",
                                                         "FISCALFLOW_REJECT_RATIO_THRESHOLD": "0.5",
                                                         "FISCALFLOW_REPLICA_ID": "k"})
    assert [r.state for r in _wait_rows(namespace, lambda rs: bool(rs), timeout=30)] == ["halted"]
    stage.kill()  # no chance to clear its row
    killed = time.monotonic()
    assert _wait_rows(namespace, lambda rs: not rs, timeout=conditions.STALE_AFTER_S + 10) == []
    gone_after = time.monotonic() - killed
    assert gone_after > conditions.STALE_AFTER_S - 2 * REFRESH_S, "it vanished because it was stale, not deleted"

    async def raw() -> int:
        conn = await asyncpg.connect(namespace.settings.pg_dsn.get_secret_value())
        try:
            return int(await conn.fetchval("SELECT count(*) FROM stage_conditions WHERE namespace = $1", namespace.ns))
        finally:
            await conn.close()
    assert asyncio.run(raw()) == 1, "the row is still there: readers ignore it"
