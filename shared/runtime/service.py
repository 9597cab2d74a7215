"""Run one stage replica: its ops port (metrics, health, readiness), runtime info, the runner.

Which service a stage runs is decided outside shared/ (services/registry.py)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

from shared.runtime.ops import OpsServer
from shared.runtime.runner import StageRunner
from shared.runtime.stage import StageSpec
from shared.settings import Settings
from shared.topics import Stage

log = logging.getLogger("fiscalflow.service")


async def run_stage(spec: StageSpec, settings: Settings, install_signals: bool = True) -> None:
    runner = StageRunner(spec, settings)
    ops = OpsServer(settings.http_host, settings.metrics_port, _readiness(runner, spec))
    port = await ops.start()
    _write_runtime_info(settings, spec.stage, runner.replica_id, port)
    log.info("ops port %s: /metrics /healthz /readyz", port)
    try:
        await runner.run(install_signals=install_signals)
    finally:
        await ops.stop()


def _readiness(runner: StageRunner, spec: StageSpec) -> Callable[[], Awaitable[tuple[bool, dict[str, Any]]]]:
    async def ready() -> tuple[bool, dict[str, Any]]:
        deps_ok = True
        if spec.ready_check is not None:
            try:
                deps_ok = await asyncio.wait_for(spec.ready_check(), 2.0)
            except Exception:
                deps_ok = False
        status = runner.status()
        condition = runner.condition()
        # "condition": halted or paused and why, in one place (`fiscalflow stack status` shows it).
        return runner.ready() and deps_ok, {"dependencies": deps_ok, **status,
                                            "condition": {"state": condition.state, "reason": condition.reason}}

    return ready


def _write_runtime_info(settings: Settings, stage: Stage, replica: str, port: int) -> None:
    run_dir = settings.local_dir / "run"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        info = {"stage": stage.value, "replica": replica, "pid": os.getpid(),
                "ops": f"http://{settings.http_host}:{port}"}
        (run_dir / f"{stage.value}-{replica}.json").write_text(json.dumps(info))
    except OSError:  # read-only filesystem in a container: the log line says it
        pass

