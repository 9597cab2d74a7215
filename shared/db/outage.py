"""A PostgreSQL outage is a transient failure of the ``postgres`` downstream, decided here once.

The adapter functions a stage's handler calls (look-ups, guarded transitions, archive moves, job
membership) are wrapped with :func:`transient_when_down`, so the stage retries and its breaker
learns when the database, or the way to it, is down, and no service converts errors itself.
Only connection-level failures are transient: a constraint violation or a bad statement is a
verdict or a bug, and stays the asyncpg error it is.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from typing import Any, ParamSpec, TypeVar

import asyncpg

from shared.runtime.errors import TransientError

DOWNSTREAM = "postgres"
# Refused, reset or timed-out connections (OSError, TimeoutError among them), a connection lost
# under a statement, a closed pool or connection, a server starting or shutting down.
CONNECTION_ERRORS: tuple[type[Exception], ...] = (
    OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncpg.CannotConnectNowError)

P = ParamSpec("P")
R = TypeVar("R")


@contextlib.contextmanager
def outage_is_transient() -> Iterator[None]:
    """Inside the block, a connection-level failure becomes ``TransientError(downstream="postgres")``."""
    try:
        yield
    except CONNECTION_ERRORS as exc:
        raise TransientError(f"postgres: {exc}", downstream=DOWNSTREAM) from exc


def transient_when_down(fn: Callable[P, Awaitable[R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """An adapter function whose connection-level failures are :func:`outage_is_transient`."""

    @functools.wraps(fn)
    async def adapter(*args: P.args, **kwargs: P.kwargs) -> R:
        with outage_is_transient():
            return await fn(*args, **kwargs)

    return adapter


@contextlib.asynccontextmanager
async def connection(db: asyncpg.Connection | asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """``db`` when it is a connection, else a connection of the pool ``db`` for the block (so an
    adapter taking either acquires inside its own outage handling)."""
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn:
            yield conn
    else:
        yield db
