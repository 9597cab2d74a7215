"""Run one stage replica: a :class:`StageRunner` as the workload of its :class:`ServiceHost`
(signals, ops port, run-info, the parts the stage declared).

Which service a stage runs is decided outside shared/ (services/registry.py)."""

from __future__ import annotations

from shared.runtime.host import ServiceHost
from shared.runtime.runner import StageRunner
from shared.runtime.stage import StageSpec


async def run_stage(spec: StageSpec, host: ServiceHost, install_signals: bool = True) -> None:
    """Until SIGTERM (or ``host.stop()``): the runner drains and commits, then the host stops the rest."""
    await host.run(StageRunner(spec, host.settings, replica_id=host.replica), install_signals)
