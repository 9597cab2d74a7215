"""A scenario's table: printed, and appended (dated, machine, commit, command) to the raw run log
(.local/bench/RESULTS.md), with the run's records (.local/bench/runs.jsonl)."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from tooling.bench.harness import uptime
from tooling.bench_results import Measurement

console = Console()


def command_line() -> str:
    """The command as run, with any FISCALFLOW_* setting from the environment (they change the system)."""
    env = " ".join(f"{k}={v}" for k, v in sorted(os.environ.items())
                   if k.startswith("FISCALFLOW_") and "TOKEN" not in k and "SECRET" not in k and "KEY" not in k)
    args = sys.argv[1:]
    return (env + " " if env else "") + ("fiscalflow " + " ".join(args) if args else "fiscalflow bench")


def emit(scenario: str, headers: Sequence[str], rows: Sequence[Sequence[object]], note: str = "",
         record: bool = True, measured: Sequence[Measurement] = ()) -> str:
    """``measured``: the run's figures per scenario, given with one of its tables (the others: none)."""
    table = Table(title=f"{scenario} ({uptime()})")
    for h in headers:
        table.add_column(h)
    for r in rows:
        table.add_row(*(str(c) for c in r))
    console.print(table)
    md = "\n".join(["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
                   + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])
    if record:
        from tooling.bench_results import append_result

        append_result(f"bench {scenario}", command_line(), md,
                      note=(note + "; " if note else "") + f"machine {uptime()} at the end of the run",
                      measured=measured)
    return md
