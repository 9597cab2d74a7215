"""A service's stage in the test's own process, as ``fiscalflow service run`` runs it: on its
service host (pool, clients, embedded API, ops port), without signal handlers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from services.registry import load_builder
from shared.runtime.host import ServiceHost
from shared.runtime.runner import StageRunner
from shared.runtime.stage import StageSpec
from shared.settings import Settings
from shared.topics import Stage

Builder = Callable[[ServiceHost], Awaitable[StageSpec]]


@dataclass
class RunningStage:
    host: ServiceHost
    runner: StageRunner
    task: asyncio.Task[None]

    @classmethod
    async def start(cls, settings: Settings, stage: Stage, build: Builder | None = None,
                    **spec: Any) -> RunningStage:
        """``spec``: fields of the built StageSpec to replace (``topic_namespace``, ``group_id``)."""
        host = ServiceHost(settings, stage)
        built = await (build or load_builder(stage))(host)
        for name, value in spec.items():
            setattr(built, name, value)
        runner = StageRunner(built, settings, replica_id=host.replica)
        return cls(host, runner, asyncio.create_task(host.run(runner, install_signals=False)))

    async def stop(self) -> None:
        """What SIGTERM does: drain and commit, then the host's parts stop in reverse order."""
        self.host.stop()
        await self.task


@asynccontextmanager
async def stage_running(settings: Settings, stage: Stage, build: Builder | None = None,
                        **spec: Any) -> AsyncIterator[StageRunner]:
    running = await RunningStage.start(settings, stage, build, **spec)
    try:
        yield running.runner
    finally:
        await running.stop()
