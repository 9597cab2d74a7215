"""``fiscalflow stack``: the local stack on real servers (up, down, status, per-component control)."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer

from shared.topics import Stage

app = typer.Typer(no_args_is_help=True, help="The local stack: broker, PostgreSQL, S3, SFTP issuers, services.")


def _parse_services(values: list[str]) -> list[Stage]:
    names = [v.strip() for item in values for v in item.split(",") if v.strip()]
    if not names or names == ["none"]:
        return []
    if names == ["all"]:
        return list(Stage)
    try:
        return [Stage(n) for n in names]
    except ValueError:
        raise typer.BadParameter(f"{names}: use none, all, or stages among {[s.value for s in Stage]}") from None


def _parse_replicas(values: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in values:
        stage, sep, count = item.partition("=")
        try:
            out[Stage(stage.strip()).value] = int(count)
        except ValueError:
            raise typer.BadParameter(f"{item!r}: expected STAGE=N") from None
        if not sep or out[stage.strip()] < 0:
            raise typer.BadParameter(f"{item!r}: expected STAGE=N with N >= 0")
    return out


@app.command()
def up(
    services: Annotated[list[str], typer.Option(
        help="none, all, or stages (repeat the option or separate by commas).")] = ["all"],  # noqa: B006
    replicas: Annotated[list[str], typer.Option(help="Replicas of a stage: STAGE=N (default 1).")] = [],  # noqa: B006
    timeout: Annotated[float, typer.Option(help="Seconds each component may take to become ready.")] = 60.0,
) -> None:
    """Start whatever is not running (a running component is left alone)."""
    from tooling.stack import ComponentError, LocalStack

    stack = LocalStack()
    t0 = time.monotonic()
    try:
        timings = stack.up(services=_parse_services(services), replicas=_parse_replicas(replicas), timeout_s=timeout)
    except ComponentError as exc:
        from tooling.stack.stack import log_tail

        typer.secho(f"stack up failed: {exc}", fg="red", err=True)
        if exc.log:
            typer.echo(log_tail(exc.log), err=True)
        raise typer.Exit(1) from None
    for name, seconds in timings.items():
        typer.echo(f"  {name:<16} {'already running' if seconds == 0 else f'{seconds:6.2f} s'}")
    typer.echo(f"stack up in {time.monotonic() - t0:.2f} s (state: {stack.state.path})")


@app.command()
def down() -> None:
    """Stop everything `up` started (identity-checked pids only); data stays under the local dir."""
    from tooling.stack import LocalStack

    t0 = time.monotonic()
    LocalStack().down()
    typer.echo(f"stack down in {time.monotonic() - t0:.2f} s")


@app.command()
def status(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """Per component and per service replica: state, address, pid; a replica halted, paused or
    not ready says why (from its /readyz)."""
    from tooling.stack import LocalStack

    st = LocalStack().status()
    if as_json:
        typer.echo(json.dumps(st.to_json(), indent=2))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"fiscalflow local stack ({st.local_dir})")
    for col in ("component", "state", "address", "pid", "log"):
        table.add_column(col)
    colour = {"running": "green", "stopped": "dim", "dead": "red"}
    for c in st.components:
        table.add_row(c.name, f"[{colour[c.state]}]{c.state}[/]" + (" (external)" if c.external else ""),
                      c.address, str(c.pid or ""), c.log)
    shown = {"halted": "red", "no answer": "red", "paused": "yellow", "not ready": "yellow"}
    for r in st.replicas:
        state = f"[{colour[r.state]}]{r.state}[/]"
        if r.condition in shown:
            state += f", [bold {shown[r.condition]}]{r.condition}[/]"
        table.add_row(f"  {r.name}", state + (f" ({r.restarts} restarts)" if r.restarts else ""),
                      r.address, str(r.pid or ""), r.log)
    console = Console()
    console.print(table)
    for r in st.replicas:  # the reasons are too long for a column
        if r.condition in shown:
            console.print(f"[bold {shown[r.condition]}]{r.name} {r.condition}[/]: {escape(r.reason)}",
                          highlight=False)


def _component_command(action: str) -> None:
    def command(component: Annotated[str, typer.Argument(help="A component name (see `stack status`).")]) -> None:
        from tooling.stack import ComponentError, LocalStack

        stack = LocalStack()
        try:
            if action == "stop":
                stack.stop(component)
                typer.echo(f"{component} stopped")
            else:
                seconds = getattr(stack, action)(component)
                typer.echo(f"{component} {action}ed in {seconds:.2f} s")
        except (ComponentError, ValueError) as exc:
            typer.secho(str(exc), fg="red", err=True)
            raise typer.Exit(1) from None

    command.__doc__ = f"{action.capitalize()} one component (fault tests: a region or S3 down for a while)."
    app.command(action)(command)


for _action in ("start", "stop", "restart"):
    _component_command(_action)


@app.command(hidden=True)
def supervise() -> None:
    """Run the replica supervisor in the foreground (spawned detached by `up`)."""
    from shared.settings import Settings
    from tooling.stack.services import Supervisor

    Supervisor(Settings()).run()
