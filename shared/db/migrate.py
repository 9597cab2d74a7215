"""Versioned migrations, applied by every service at start (idempotent, serialised by an advisory lock)."""

from __future__ import annotations

import logging
import re
from importlib.resources import files
from urllib.parse import parse_qs, urlsplit

import asyncpg

log = logging.getLogger("fiscalflow.db")

LOCK_ID = 0x46495343  # "FISC": one migrator at a time across replicas


def migrations() -> list[tuple[int, str, str]]:
    out = []
    for entry in files("shared.db").joinpath("migrations").iterdir():
        m = re.match(r"(\d+)_.*\.sql$", entry.name)
        if m:
            out.append((int(m.group(1)), entry.name, entry.read_text()))
    return sorted(out)


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply the migrations not yet applied; returns their names."""
    applied: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", LOCK_ID)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, name, sql in migrations():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name)
            applied.append(name)
            log.info("applied migration %s", name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_ID)
    return applied


# The services' statements touch up to a few hundred rows by primary key per batch (unnest or
# ANY of the batch's ids).  With PostgreSQL's default random_page_cost (4, spinning disks) the
# planner priced 500 key probes above one sequential scan of a 30,000-row registry and hashed the
# whole table for every batch: the guarded transition cost 115 µs of server CPU per record, and
# grew with the table.  1.1 (the usual figure for SSDs and a cached working set) keeps those
# plans on the primary key: 25 µs per record (decision 0010, docs/decisions/0010-random-page-cost.md).
SESSION_SETTINGS = {"random_page_cost": "1.1"}


# PostgreSQL keeps NAMEDATALEN - 1 bytes of an application_name and shows other than printable
# ASCII as "?": the name is cut and cleaned here, so what pg_stat_activity shows is what was sent.
APPLICATION_NAME_MAX = 63


_APP_PREFIX = "fiscalflow-"


def application_name(service: str, replica: str) -> str:
    """What a service's connections call themselves (``pg_stat_activity.application_name``):
    ``fiscalflow-<service>/<replica>``, so an operator sees which stage and which replica (pod)
    holds each connection, and which one a slow or blocking statement comes from."""
    name = "".join(c if " " <= c <= "~" else "?" for c in f"{_APP_PREFIX}{service}/{replica}")
    return name[:APPLICATION_NAME_MAX]


def service_of(app_name: str) -> str | None:
    """The service an :func:`application_name` names; None for any other connection's name."""
    if not app_name.startswith(_APP_PREFIX):
        return None
    service = app_name[len(_APP_PREFIX):].partition("/")[0]
    return service or None


def session_settings(dsn: str, app_name: str | None = None) -> dict[str, str]:
    """The pool's session settings: ours, and ``application_name`` unless the DSN names its own
    (an operator's ``?application_name=...`` wins)."""
    out = dict(SESSION_SETTINGS)
    if app_name and "application_name" not in parse_qs(urlsplit(dsn).query):
        out["application_name"] = app_name
    return out


async def connect_pool(dsn: str, min_size: int = 1, max_size: int = 8) -> asyncpg.Pool:
    """A pool on a migrated database."""
    pool = new_pool(dsn, min_size, max_size)
    await open_pool(pool)
    return pool


async def _release(conn: asyncpg.Connection) -> None:
    """What a connection needs when it goes back to the pool: nothing beyond what asyncpg always
    does (roll back a transaction left open, drop listeners).

    asyncpg's default reset sends ``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``
    on every release: one more round trip per batch of a stage, ~1/4 of the store stage's
    PostgreSQL statements, and the server's CPU for them.  No fiscalflow code leaves session state
    on a pooled connection: no LISTEN, no SET, no cursor outside a transaction, and the one
    session-level advisory lock (:func:`migrate`'s) is released in a ``finally`` (a connection
    that fails there is terminated, not returned).  The session settings above are connection
    parameters, which RESET ALL would keep anyway.
    """


def new_pool(dsn: str, min_size: int = 1, max_size: int = 8, app_name: str | None = None) -> asyncpg.Pool:
    """A pool not connected yet: a service hands it to its parts when it is built, and the service
    host opens it (:func:`open_pool`) at start.  ``app_name``: see :func:`application_name`."""
    pool: asyncpg.Pool = asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, command_timeout=30,
                                             server_settings=session_settings(dsn, app_name), reset=_release)
    return pool


async def open_pool(pool: asyncpg.Pool) -> None:
    """Connect a :func:`new_pool` and migrate its database."""
    await pool  # asyncpg: awaiting a pool connects its first min_size connections
    async with pool.acquire() as conn:
        await migrate(conn)
