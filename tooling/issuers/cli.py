"""``fiscalflow issuer``: demo invoices into the regional SFTP roots, and the demo PKI's paths."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True, help="Demo issuers: generate or load CFDI files into the regional roots.")


def _default_batch() -> str:
    return time.strftime("batch-%Y%m%d-%H%M%S")


@app.command()
def generate(
    count: Annotated[int, typer.Option(min=1, help="Documents to generate.")] = 1000,
    region: Annotated[str | None, typer.Option(help="One region (default: spread across all).")] = None,
    bad_fraction: Annotated[float, typer.Option(min=0.0, max=1.0, help="Fraction deliberately bad.")] = 0.03,
    seed: Annotated[int, typer.Option(help="Same seed, same documents.")] = 0,
    batch: Annotated[str | None, typer.Option(help="Sub-directory of the region root (default: timestamp).")] = None,
    start: Annotated[str | None, typer.Option(help="First invoice day YYYY-MM-DD (default: DAYS ago).")] = None,
    days: Annotated[int, typer.Option(min=1, help="Days the invoice dates spread over.")] = 7,
    workers: Annotated[int, typer.Option(min=0, help="Processes (0: all cores for large counts).")] = 0,
) -> None:
    """Generate sealed, stamped CFDI 4.0 files and a MANIFEST.csv per region and batch."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    from rich.table import Table

    from shared.settings import Settings
    from tooling.issuers.generator import InvoiceGenerator
    from tooling.issuers.output import batch_dir, merge_manifest, write_invoice
    from tooling.issuers.pki import DemoPKI

    settings = Settings()
    regions = [region] if region else list(settings.regions())
    if region and region not in settings.regions():
        raise typer.BadParameter(f"unknown region {region!r}; known: {', '.join(settings.regions())}")
    batch = batch or _default_batch()
    roots = {r: settings.region_root(r) for r in regions}
    try:
        for root in roots.values():
            root.mkdir(parents=True, exist_ok=True)
            batch_dir(root, batch).mkdir(parents=True, exist_ok=True)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    first_day = date.fromisoformat(start) if start else date.today() - timedelta(days=days)
    pki = DemoPKI.ensure(settings.pki_dir())
    generator = InvoiceGenerator(pki, seed, start=first_day, days=days, bad_fraction=bad_fraction)
    if workers == 0:
        workers = (os.cpu_count() or 1) if count >= 5000 else 1

    rows: dict[str, list[object]] = {r: [] for r in regions}
    per_region: Counter[str] = Counter()
    defects: Counter[str] = Counter()
    console = Console()
    began = time.perf_counter()
    columns = (TextColumn("generating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("generate", total=count)
        for n, invoice in enumerate(generator.generate_many(count, workers=workers)):
            target = regions[n % len(regions)]
            rows[target].append(write_invoice(roots[target], target, batch, invoice))
            per_region[target] += 1
            if invoice.defect:
                defects[invoice.defect] += 1
            progress.advance(task)
    for target, region_rows in rows.items():
        merge_manifest(batch_dir(roots[target], batch), region_rows)  # type: ignore[arg-type]
    elapsed = time.perf_counter() - began

    table = Table(title=f"batch {batch}: {count} docs in {elapsed:.1f} s ({count / elapsed:.0f} docs/s)")
    table.add_column("region")
    table.add_column("docs", justify="right")
    table.add_column("manifest")
    for target in regions:
        table.add_row(target, str(per_region[target]), str(batch_dir(roots[target], batch) / "MANIFEST.csv"))
    console.print(table)
    bad = ", ".join(f"{k} {v}" for k, v in sorted(defects.items())) or "none"
    console.print(f"defects: {sum(defects.values())} ({bad})")
    console.print(f"PKI: {pki.directory}  (--trust-ca {pki.ca_cert}  --stamp-certs {pki.stamp_certs_dir})")


@app.command()
def load(
    paths: Annotated[list[Path], typer.Argument(exists=True, help="XML files or directories (recursive).")],
    region: Annotated[str, typer.Option(help="Target region.")],
    batch: Annotated[str | None, typer.Option(help="Sub-directory of the region root (default: timestamp).")] = None,
) -> None:
    """Copy existing XML files into a region root and merge them into that batch's MANIFEST.csv."""
    from shared.settings import Settings
    from tooling.issuers.output import load_files

    settings = Settings()
    if region not in settings.regions():
        raise typer.BadParameter(f"unknown region {region!r}; known: {', '.join(settings.regions())}")
    root = settings.region_root(region)
    root.mkdir(parents=True, exist_ok=True)
    try:
        rows = load_files(root, region, batch or _default_batch(), paths)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    typer.echo(f"loaded {len(rows)} files into {root}")


@app.command()
def pki(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """Paths of the demo PKI (created on first use): CA certificate for --trust-ca, stamp-certs directory."""
    from shared.settings import Settings
    from tooling.issuers.pki import DemoPKI

    demo = DemoPKI.ensure(Settings().pki_dir())
    info = {
        "directory": str(demo.directory),
        "trust_ca": str(demo.ca_cert),
        "stamp_certs": str(demo.stamp_certs_dir),
        "issuers": [{"rfc": i.rfc, "name": i.name, "regimen": i.regimen, "persona": i.persona.value,
                     "no_certificado": i.no_certificado} for i in demo.issuers],
    }
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    typer.echo(f"directory    {info['directory']}\ntrust-ca     {info['trust_ca']}\nstamp-certs  {info['stamp_certs']}")
    typer.echo(f"issuers      {len(demo.issuers)}")
