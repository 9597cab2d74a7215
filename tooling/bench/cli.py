"""``fiscalflow bench SCENARIO``: the issue-8 benchmarks, each on an isolated stack of its own; each run
prints its table and appends it to the raw run log (.local/bench/: RESULTS.md, a dated entry with
machine, commit, command, numbers and load; runs.jsonl, one record per scenario).
``fiscalflow bench readme`` regenerates bench/README.md's table from those records."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True, help="Benchmarks: each scenario on its own isolated local stack.")

Count = Annotated[int | None, typer.Option("--count", "-n", help="Invoices (default: the scenario's full size).")]
Replicas = Annotated[list[str] | None, typer.Option("--replicas", help="STAGE=N, repeatable.")]


def _recorded(name: str, fn: Callable[[], None]) -> None:
    """Run a scenario; a failed run is recorded too (briefly, a record with its error per scenario), then
    the error is raised."""
    try:
        fn()
    except Exception as exc:
        from tooling.bench.output import command_line
        from tooling.bench.scenarios import measured_by
        from tooling.bench_results import Measurement, append_result

        error = f"{type(exc).__name__}: {str(exc)[:500]}"
        append_result(f"bench {name} — FAILED", command_line(), error,
                      measured=[Measurement(s.id, {}, f"FAILED: {error}", error=error) for s in measured_by(name)])
        raise


def _replicas(items: list[str] | None) -> dict[str, int]:
    out = {}
    for item in items or []:
        stage, _, n = item.partition("=")
        out[stage] = int(n)
    return out


@app.command("seed-scenario")
def seed_scenario(count: Count = None, replicas: Replicas = None) -> None:
    """50,000 invoices from three slow issuers (500 ms per file, ≤ 10 connections), whole pipeline."""
    from tooling.bench import seed

    _recorded("seed-scenario", lambda: seed.run(count or 50_000, _replicas(replicas)))


@app.command("seed-download")
def seed_download(count: Count = None, look_ahead: Annotated[int | None, typer.Option(
        "--look-ahead", help="download_look_ahead (default: the seed scenario's 20,000; 0: FIFO).")] = None) -> None:
    """The seed scenario's download stage alone, each region's records in one run: region fairness."""
    from tooling.bench import seed

    seed.run_download(count or 30_000, look_ahead)


@app.command()
def throughput(count: Count = None, replicas: Replicas = None) -> None:
    """100,000 invoices from local issuers, whole pipeline, all on this machine."""
    from tooling.bench import throughput as tp

    _recorded("throughput", lambda: tp.run(count or 100_000, _replicas(replicas)))


@app.command()
def stages(count: Count = None) -> None:
    """Each stage alone on a pre-filled input topic."""
    from tooling.bench import stages as st

    _recorded("stages", lambda: st.run(count or 10_000))


@app.command("ingest-api")
def ingest_api(count: Count = None) -> None:
    """Record ids accepted per second by the HTTP API, and straight to the topic."""
    from tooling.bench import ingest_api as ia

    _recorded("ingest-api", lambda: ia.run(count or 200_000))


@app.command()
def latency(samples: Annotated[int, typer.Option(help="Records per measurement.")] = 50,
            backlog: Annotated[int, typer.Option(help="Backlog for the priority measurement.")] = 50_000) -> None:
    """End-to-end latency of single records: idle, and priority under a backlog."""
    from tooling.bench import latency as la

    _recorded("latency", lambda: la.run(samples, backlog))


@app.command()
def scaling(validate_count: Annotated[int, typer.Option(help="Records per validate configuration.")] = 10_000,
            download_count: Annotated[int, typer.Option(help="Records per download configuration.")] = 3_000) -> None:
    """validate with 1 and 2 replicas; download with 1 and 3 replicas against slow issuers."""
    from tooling.bench import scaling as sc

    _recorded("scaling", lambda: sc.run(validate_count, download_count))


@app.command()
def memory(count: Count = None) -> None:
    """Steady-state RSS per stage process under load."""
    from tooling.bench import memory as me

    _recorded("memory", lambda: me.run(count or 10_000))


@app.command("all")
def run_all() -> None:
    """Every scenario, full size, one after another (about 40 minutes on 2 cores)."""
    # The two whole-pipeline targets first: they matter most and take longest (~7 and ~14 minutes).
    scenarios: list[tuple[str, Callable[[], None]]] = [
        ("seed-scenario", lambda: seed_scenario(None, None)), ("throughput", lambda: throughput(None, None)),
        ("ingest-api", lambda: ingest_api(None)), ("latency", lambda: latency(50, 50_000)),
        ("stages", lambda: stages(None)), ("scaling", lambda: scaling(10_000, 3_000)),
        ("memory", lambda: memory(None))]
    for name, fn in scenarios:
        typer.echo(f"== bench {name}")
        try:
            fn()
        except Exception as exc:  # one failed scenario must not hide the others' numbers (already recorded)
            typer.echo(f"bench {name} failed: {exc}", err=True)


@app.command()
def readme(check: Annotated[bool, typer.Option(help="Change nothing; exit 1 if the table is stale.")] = False,
           runs: Annotated[Path | None, typer.Option(help="Raw run records (default .local/bench/runs.jsonl).")] = None,
           path: Annotated[Path | None, typer.Option(help="The README (default bench/README.md).")] = None) -> None:
    """Regenerate bench/README.md's table: each scenario's newest recorded run; a row with none stays as it is."""
    import difflib

    from tooling.bench.readme import newest_per_scenario, regenerate
    from tooling.bench_results import REPO, read_records

    records, problems = read_records(runs)
    for problem in problems:
        typer.echo(f"skipped {problem}", err=True)
    path = path or REPO / "bench" / "README.md"
    text = path.read_text(encoding="utf-8")
    try:
        new = regenerate(text, records)
    except ValueError as exc:
        typer.echo(f"{path}: {exc}", err=True)
        raise typer.Exit(2) from exc
    newest = newest_per_scenario(records)
    for sid, r in newest.items():
        typer.echo(f"{sid}: {r.date:%Y-%m-%d %H:%M} {r.commit} — {r.summary}")
    if new == text:
        typer.echo(f"{path}: up to date ({len(newest)} rows from records)")
        return
    if check:
        typer.echo("".join(difflib.unified_diff(text.splitlines(True), new.splitlines(True), str(path),
                                                "generated")), err=True)
        typer.echo(f"{path}: stale; run `fiscalflow bench readme`", err=True)
        raise typer.Exit(1)
    path.write_text(new, encoding="utf-8")
    typer.echo(f"{path}: table regenerated ({len(newest)} rows from records)")
