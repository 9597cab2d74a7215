"""``fiscalflow service run STAGE``: one replica of a stage, in the foreground."""

from __future__ import annotations

import typer

from shared.topics import Stage

app = typer.Typer(no_args_is_help=True, help="Run pipeline services.")


@app.command("run")
def run(stage: Stage = typer.Argument(..., help="The stage to run.")) -> None:
    """Run one replica of STAGE (SIGTERM drains in-flight work and commits)."""
    from shared.runtime.service import main

    main(stage)
