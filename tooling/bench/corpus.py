"""Generated invoices for the benchmarks, made once and reused by every scenario.

Generating is ~1,000 documents/s on this machine: 100,000 invoices cost more than the pipeline run
they feed.  So the corpus is generated in chunks of ``CHUNK`` (seeded by chunk number, deterministic)
under ``.bench-corpus/<date>/`` with its own demo PKI, and a scenario hard-links the first N files
into its stack's region roots (``place``) with a manifest of exactly those files.  The stacks trust
that PKI (``trust_settings``).  Dated, because invoice dates and the stamp window are relative to the
day they were generated.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
import shutil
from dataclasses import astuple, dataclass
from pathlib import Path

from shared.settings import PROJECT_ROOT
from tooling.issuers.output import MANIFEST_HEADER, MANIFEST_NAME, ManifestRow

CHUNK = 5000
REGIONS = ("north", "central", "south")
BATCH = "bench"
ORDER = "ORDER.csv"


def corpus_root() -> Path:
    return PROJECT_ROOT / ".bench-corpus" / dt.date.today().isoformat()


def pki_dir() -> Path:
    return corpus_root() / "pki"


def trust_settings() -> dict[str, str]:
    """Settings overrides that make a stack trust the corpus's demo PKI (not its own)."""
    from tooling.issuers.pki import DemoPKI

    pki = DemoPKI.ensure(pki_dir())
    return {"trust_ca": f"demo={pki.ca_cert}", "stamp_certs": str(pki.stamp_certs_dir)}


def _chunk_dir(n: int) -> Path:
    return corpus_root() / f"c{n:03d}"


def ensure_chunk(n: int, bad_fraction: float = 0.03) -> Path:
    """Chunk ``n`` (``CHUNK`` invoices spread over the three regions), generated if missing."""
    from tooling.issuers.generator import InvoiceGenerator
    from tooling.issuers.output import batch_dir, write_invoice
    from tooling.issuers.pki import DemoPKI

    done = _chunk_dir(n) / "DONE"
    if done.exists():
        return _chunk_dir(n)
    tmp = _chunk_dir(n).with_suffix(".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    pki = DemoPKI.ensure(pki_dir())
    gen = InvoiceGenerator(pki, 1000 + n, start=dt.date.today() - dt.timedelta(days=7), days=7,
                           bad_fraction=bad_fraction)
    order: list[ManifestRow] = []
    for region in REGIONS:
        batch_dir(tmp / region, BATCH).mkdir(parents=True, exist_ok=True)
    for i, inv in enumerate(gen.generate_many(CHUNK, workers=os.cpu_count() or 1)):
        region = REGIONS[i % len(REGIONS)]
        order.append(write_invoice(tmp / region, region, BATCH, inv))
    # Generation order (merge_manifest sorts by path): what ``place`` takes the first N of.
    with (tmp / ORDER).open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(MANIFEST_HEADER)
        w.writerows(astuple(row) for row in order)
    tmp.rename(_chunk_dir(n))
    done.touch()
    return _chunk_dir(n)


@dataclass
class Placed:
    count: int  # manifest rows placed (files + the few planted missing ones)
    per_region: dict[str, int]
    rows: list[dict[str, str]]


def place(count: int, region_roots: dict[str, Path], batch: str = BATCH, skip: int = 0) -> Placed:
    """Hard-link corpus invoices ``skip .. skip+count-1`` into ``<root>/<batch>/`` of each region,
    with a MANIFEST.csv listing exactly them."""
    wanted = range(skip, skip + count)
    per_region: dict[str, list[dict[str, str]]] = {r: [] for r in region_roots}
    all_rows: list[dict[str, str]] = []
    for n in range(skip // CHUNK, (skip + count - 1) // CHUNK + 1):
        chunk = ensure_chunk(n)
        for i, row in enumerate(csv.DictReader((chunk / ORDER).open())):
            index = n * CHUNK + i
            if index not in wanted:
                continue
            src = chunk / row["region"] / row["path"]
            region = list(region_roots)[index % len(region_roots)]
            row["region"] = region
            row["path"] = f"{batch}/{Path(row['path']).name}"
            target = region_roots[region] / row["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            if src.exists() and not target.exists():
                os.link(src, target)
            per_region[region].append(row)
            all_rows.append(row)
    for region, rows in per_region.items():
        with (region_roots[region] / batch / MANIFEST_NAME).open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(MANIFEST_HEADER))
            w.writeheader()
            w.writerows(rows)
        os.chmod(region_roots[region] / batch / MANIFEST_NAME, 0o644)
    return Placed(len(all_rows), {r: len(v) for r, v in per_region.items()}, all_rows)
