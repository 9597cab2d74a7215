"""The ``fiscalflow`` command: one entry point, sub-commands registered by their owners.

Heavy imports (chDB, satcfdi, confluent-kafka) happen inside the commands, so
``fiscalflow --help`` stays fast.  The tooling's groups (local stack, demo issuers, demo, bench)
come from the separate ``tooling`` distribution: present in a developer's .venv, absent from the
product image, where the command has the product's groups only.
"""

from __future__ import annotations

import importlib

import typer

from shared.topics import Stage

# (module, name of the group or None when the module registers plain commands), in help order.
GROUPS: list[tuple[str, str | None]] = [
    ("tooling.stack.cli", "stack"),
    ("tooling.issuers.cli", "issuer"),
    ("services.validate.cli", None),
    ("shared.dlq.cli", "dlq"),
    ("shared.cli.config", None),
    ("shared.cli.topology", None),
    ("tooling.demo", None),
    ("services.ingest.cli", None),
    ("services.report.cli", "report"),
    ("services.report.console_cli", None),
    ("tooling.bench.cli", "bench"),
]
OPTIONAL = "tooling"  # not installed in the product image

service = typer.Typer(no_args_is_help=True, help="Run pipeline services.")


@service.command("run")
def run(stage: Stage = typer.Argument(..., help="The stage to run.")) -> None:
    """Run one replica of STAGE (SIGTERM drains in-flight work and commits)."""
    from services.registry import run as run_service

    run_service(stage)


def register_all(app: typer.Typer) -> None:
    app.add_typer(service, name="service")
    for module_name, group in GROUPS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if module_name.startswith(f"{OPTIONAL}.") and exc.name == OPTIONAL:
                continue  # a product-only install: no tooling
            raise
        if group is None:
            module.register(app)
        else:
            app.add_typer(module.app, name=group)


app = typer.Typer(no_args_is_help=True, add_completion=True, help=__doc__.splitlines()[0])
register_all(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
