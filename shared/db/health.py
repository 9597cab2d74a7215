"""Readiness of the database for /readyz."""

from __future__ import annotations

import asyncpg


async def db_ready(pool: asyncpg.Pool | None) -> bool:
    if pool is None:
        return False
    async with pool.acquire() as conn:
        return bool(await conn.fetchval("SELECT 1"))
