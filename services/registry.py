"""Which stage runs which service: the composition root of a stage process.

Each service exposes ``build_stage(settings) -> StageSpec`` in ``services/<stage>/service.py`` (the
runtime in shared/ runs it), or ``main(settings)`` when it is not a StageRunner stage (report: a
faust app).  Only this module knows the services; shared/ knows none of them.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Awaitable, Callable

from shared.logs import setup_logging
from shared.runtime.memory import release_free_heap
from shared.runtime.service import run_stage
from shared.runtime.stage import StageSpec
from shared.runtime.tracing import setup_tracing
from shared.settings import Settings
from shared.topics import Stage

StageBuilder = Callable[[Settings], Awaitable[StageSpec]]


def load_builder(stage: Stage) -> StageBuilder:
    module = importlib.import_module(f"services.{stage.value}.service")
    builder: StageBuilder = module.build_stage
    return builder


def run(stage: Stage) -> None:
    """One replica of ``stage`` in this process, until SIGTERM (``fiscalflow service run STAGE``)."""
    settings = Settings()
    setup_logging(settings.log_level, service=stage.value)
    setup_tracing(f"fiscalflow-{stage.value}", settings.otlp_endpoint)
    module = importlib.import_module(f"services.{stage.value}.service")
    if hasattr(module, "main"):  # a service that is not a StageRunner stage (report: a faust app)
        module.main(settings)
        return

    async def _main() -> None:
        spec = await load_builder(stage)(settings)
        release_free_heap()
        await run_stage(spec, settings)

    asyncio.run(_main())
