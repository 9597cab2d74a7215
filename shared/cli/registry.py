"""Sub-command groups of ``fiscalflow``: each module exposes ``app`` (a typer.Typer) or ``register(app)``."""

from __future__ import annotations

import importlib

import typer

# (module, name of the group or None when the module registers plain commands)
GROUPS: list[tuple[str, str | None]] = [
    ("shared.stack.cli", "stack"),
    ("shared.issuers.cli", "issuer"),
    ("services.validate.cli", None),
    ("shared.runtime.cli", "service"),
    ("shared.dlq.cli", "dlq"),
    ("shared.cli.config", None),
    ("shared.cli.demo", None),
    ("services.ingest.cli", None),
    ("services.report.cli", "report"),
    ("shared.bench.cli", "bench"),
]


def register_all(app: typer.Typer) -> None:
    for module_name, group in GROUPS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue  # that part of the system is not built yet
            raise
        if group is None:
            module.register(app)
        else:
            app.add_typer(module.app, name=group)
