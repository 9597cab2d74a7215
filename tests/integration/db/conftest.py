"""A database of a test's own, for what must not see the rows other tests (or earlier runs) left
in the shared test database."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from shared.settings import Settings


@pytest.fixture
async def blank_db(stack_settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    """A new, empty database next to the test stack's, dropped afterwards."""
    dsn = stack_settings.pg_dsn.get_secret_value()
    name = f"ff_blank_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    conn = await asyncpg.connect(urlunsplit(urlsplit(dsn)._replace(path=f"/{name}")))
    try:
        yield conn
    finally:
        await conn.close()
        # A connection of its own: the server may have been restarted meanwhile (the machine's
        # PostgreSQL is shared), and the database must not outlive the test.
        admin = await asyncpg.connect(dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
