"""Migrations on a database of their own on the real PostgreSQL: a registry from before a
migration is carried over, and what a migration removed is refused afterwards."""

from __future__ import annotations

import asyncpg
import pytest

from shared.db.migrate import migrate, migrations
from shared.settings import Settings


async def _apply_up_to(conn: asyncpg.Connection, last: int) -> None:
    """The migrations up to ``last`` as an older release applied them."""
    await conn.execute("CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
                       " applied_at timestamptz NOT NULL DEFAULT now())")
    for version, name, sql in migrations():
        if version <= last:
            await conn.execute(sql)
            await conn.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name)


async def test_validated_records_become_downloaded_and_the_status_is_refused(blank_db: asyncpg.Connection) -> None:
    conn = blank_db
    await _apply_up_to(conn, 20)
    await conn.execute("INSERT INTO fiscal_records (record_id, region, remote_path, status) VALUES"
                       " ('old-validated', 'north', 'a.xml', 'validated'), ('old-archived', 'north', 'b.xml',"
                       " 'archived')")
    applied = await migrate(conn)
    assert "0030_no_validated_status.sql" in applied
    rows = await conn.fetch("SELECT record_id, status FROM fiscal_records ORDER BY record_id")
    assert [tuple(r) for r in rows] == [("old-archived", "archived"), ("old-validated", "downloaded")]
    with pytest.raises(asyncpg.CheckViolationError):
        await conn.execute("UPDATE fiscal_records SET status = 'validated' WHERE record_id = 'old-archived'")


async def test_dropping_the_unread_indexes_keeps_one_archive_per_uuid(blank_db: asyncpg.Connection) -> None:
    """Migration 0098 drops the exact-case UUID index: the case-insensitive one still refuses a
    second archive of a UUID, as written or in another case, and a registry from before keeps its rows."""
    conn = blank_db
    await _apply_up_to(conn, 97)
    await conn.execute("INSERT INTO fiscal_records (record_id, region, remote_path, status, tfd_uuid) VALUES"
                       " ('first', 'north', 'a.xml', 'archived', 'AB12CD34-0000-4000-8000-000000000001'),"
                       " ('second', 'north', 'b.xml', 'downloaded', NULL)")
    assert "0098_registry_drops_unread_indexes.sql" in await migrate(conn)
    rows = await conn.fetch("SELECT indexname FROM pg_indexes WHERE tablename = 'fiscal_records'")
    indexes = {r["indexname"] for r in rows}
    assert "fiscal_records_archived_uuid" not in indexes and "fiscal_records_region_path" not in indexes
    assert "fiscal_records_archived_uuid_ci" in indexes
    for uuid in ("AB12CD34-0000-4000-8000-000000000001", "ab12cd34-0000-4000-8000-000000000001"):
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute("UPDATE fiscal_records SET status = 'archived', tfd_uuid = $1"
                               " WHERE record_id = 'second'", uuid)
    assert await conn.fetchval("SELECT count(*) FROM fiscal_records") == 2


async def test_a_pooled_connection_comes_back_clean_without_the_default_reset(stack_settings: Settings) -> None:
    """The pool skips asyncpg's RESET ALL round trip (shared/db/migrate.py ``_release``): what a
    borrower could leave behind is still undone, and start-up leaves the migration lock free."""
    from shared.db.migrate import LOCK_ID, connect_pool

    dsn = stack_settings.pg_dsn.get_secret_value()
    pool = await connect_pool(dsn, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            pid = await conn.fetchval("SELECT pg_backend_pid()")
            tx = conn.transaction()
            await tx.start()
            await conn.execute("CREATE TEMP TABLE left_open (x int)")  # never committed
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT pg_backend_pid()") == pid, "the same connection, reused"
            assert not conn.is_in_transaction()
            assert await conn.fetchval("SELECT to_regclass('pg_temp.left_open')") is None, "rolled back"
            assert await conn.fetchval("SHOW random_page_cost") == "1.1", "session settings kept"
        other = await asyncpg.connect(dsn)
        try:
            assert await other.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_ID), "migrate released its lock"
            await other.execute("SELECT pg_advisory_unlock($1)", LOCK_ID)
        finally:
            await other.close()
    finally:
        await pool.close()


async def test_a_services_connections_name_the_stage_and_replica(stack_settings: Settings) -> None:
    """pg_stat_activity says which stage and replica holds each connection; an operator's own
    application_name in the DSN wins."""
    from shared.db.migrate import new_pool, open_pool
    from shared.runtime.host import ServiceHost

    host = ServiceHost(stack_settings, "store", "store-7c9f-x2")
    pool = host.postgres()
    part = host.parts[-1]
    await part.start()
    try:
        async with pool.acquire() as conn:
            assert await conn.fetchval(
                "SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()"
            ) == "fiscalflow-store/store-7c9f-x2"
    finally:
        await part.stop()

    dsn = stack_settings.pg_dsn.get_secret_value()
    own = new_pool(dsn + ("&" if "?" in dsn else "?") + "application_name=billing-audit", max_size=1,
                   app_name="fiscalflow-store/store-7c9f-x2")
    await open_pool(own)
    try:
        assert await own.fetchval("SHOW application_name") == "billing-audit"
    finally:
        await own.close()
