"""Which stage runs which service: the composition root of a service process.

Every service runs on a :class:`~shared.runtime.host.ServiceHost` (signals, ops port, run-info,
PostgreSQL pool, embedded API, periodic tasks).  Each exposes, in ``services/<stage>/service.py``,
``build_stage(host) -> StageSpec`` (the runtime in shared/ runs it), or ``build_service(host)``
returning the host's workload when it is not a StageRunner stage (report: a faust app).  Only
this module knows the services; shared/ knows none of them.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Awaitable, Callable

from shared.logs import setup_logging
from shared.runtime.host import ServiceHost, Workload
from shared.runtime.memory import release_free_heap, tune_collector
from shared.runtime.runner import StageRunner
from shared.runtime.stage import StageSpec
from shared.runtime.tracing import setup_tracing
from shared.settings import Settings
from shared.topics import Stage

StageBuilder = Callable[[ServiceHost], Awaitable[StageSpec]]


def load_builder(stage: Stage) -> StageBuilder:
    module = importlib.import_module(f"services.{stage.value}.service")
    builder: StageBuilder = module.build_stage
    return builder


async def build_workload(stage: Stage, host: ServiceHost) -> Workload:
    """What ``stage``'s process runs on ``host``; its parts are declared on the host meanwhile."""
    module = importlib.import_module(f"services.{stage.value}.service")
    if hasattr(module, "build_service"):  # not a StageRunner stage (report: a faust app)
        workload: Workload = await module.build_service(host)
        return workload
    return StageRunner(await load_builder(stage)(host), host.settings, replica_id=host.replica)


def run(stage: Stage) -> None:
    """One replica of ``stage`` in this process, until SIGTERM (``fiscalflow service run STAGE``)."""
    settings = Settings()
    if problems := settings.exposed_secret_problems(stage):
        # Before anything listens: published or guessable secrets never guard a reachable port.
        raise SystemExit(f"fiscalflow {stage.value}: refusing to start on {settings.http_host} (not loopback): "
                         + "; ".join(problems) + ". Set them (FISCALFLOW_<NAME> or FISCALFLOW_<NAME>_FILE).")
    setup_logging(settings.log_level, service=stage.value)
    setup_tracing(f"fiscalflow-{stage.value}", settings.otlp_endpoint)

    async def _main() -> None:
        host = ServiceHost(settings, stage)
        workload = await build_workload(stage, host)
        release_free_heap()
        tune_collector(settings.gc_young_threshold)
        await host.run(workload)

    asyncio.run(_main())
