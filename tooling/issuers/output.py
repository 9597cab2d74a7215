"""Region folders as the issuers' SFTP servers expose them: ``<root>/<batch>/<record_id>.xml`` plus
a ``MANIFEST.csv`` per batch that the ingest stage reads.

Every path is checked to stay inside the region root: batch names come from the command line.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import astuple, dataclass
from pathlib import Path, PurePosixPath

from tooling.issuers.defects import Defect
from tooling.issuers.generator import GeneratedInvoice

MANIFEST_NAME = "MANIFEST.csv"
MANIFEST_HEADER = ("record_id", "region", "path", "sha256", "size", "expected_verdict", "expected_reason")
_SAFE_PART = re.compile(r"[A-Za-z0-9._-]+")


@dataclass(frozen=True, slots=True)
class ManifestRow:
    record_id: str
    region: str
    path: str
    sha256: str
    size: int
    expected_verdict: str
    expected_reason: str


def batch_dir(region_root: Path, batch: str) -> Path:
    """``region_root/batch``; refuses absolute names, ``..``, and anything resolving outside the root."""
    parts = PurePosixPath(batch).parts
    if not parts or batch.startswith(("/", "\\")) or any(p in ("..", ".") or not _SAFE_PART.fullmatch(p)
                                                         for p in parts):
        raise ValueError(f"unsafe batch name {batch!r}: use letters, digits, '.', '_', '-' and '/'")
    target = (region_root / Path(*parts)).resolve()
    if not target.is_relative_to(region_root.resolve()):
        raise ValueError(f"batch {batch!r} leaves the region root")
    return target


def _write_atomic(path: Path, data: bytes) -> None:
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, prefix=".", suffix=".tmp") as tmp:
        tmp.write(data)
    # NamedTemporaryFile creates 0600; the issuer's SFTP user must be able to read the manifest.
    os.chmod(tmp.name, 0o644)
    os.replace(tmp.name, path)


def read_manifest(path: Path) -> dict[str, ManifestRow]:
    if not path.is_file():
        return {}
    with path.open(newline="") as handle:
        return {row["record_id"]: ManifestRow(**{**row, "size": int(row["size"])})  # type: ignore[arg-type]
                for row in csv.DictReader(handle)}


def merge_manifest(directory: Path, rows: Iterable[ManifestRow]) -> Path:
    """Add or replace rows by record_id; rewritten atomically so a reader never sees half a file."""
    path = directory / MANIFEST_NAME
    merged = read_manifest(path)
    merged.update((row.record_id, row) for row in rows)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(MANIFEST_HEADER)
    writer.writerows(astuple(row) for row in sorted(merged.values(), key=lambda r: r.path))
    _write_atomic(path, out.getvalue().encode("utf-8"))
    return path


def write_invoice(region_root: Path, region: str, batch: str, invoice: GeneratedInvoice) -> ManifestRow:
    """Write one generated invoice (or, for FILE_NOT_FOUND, deliberately not) and return its manifest row."""
    directory = batch_dir(region_root, batch)
    target = directory / f"{invoice.record_id}.xml"
    digest = hashlib.sha256(invoice.xml).hexdigest()
    if invoice.defect == Defect.CHECKSUM_MISMATCH:
        digest = hashlib.sha256(invoice.xml + b"\n").hexdigest()  # the file is fine, the manifest lies
    if invoice.defect != Defect.FILE_NOT_FOUND:
        target.write_bytes(invoice.xml)
    relative = target.relative_to(region_root.resolve()).as_posix()
    return ManifestRow(invoice.record_id, region, relative, digest, len(invoice.xml), invoice.expected_verdict,
                       invoice.expected_reason)


def _xml_files(paths: Iterable[Path]) -> Iterable[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() == ".xml")
        elif path.is_file():
            yield path
        else:
            raise FileNotFoundError(path)


def load_files(region_root: Path, region: str, batch: str, paths: Iterable[Path]) -> list[ManifestRow]:
    """Copy existing XML files into ``region_root/batch`` and merge them into its manifest.

    The record id is the file stem (made filename-safe); a clash with another file gets a suffix.
    Their verdict is unknown, so expected_verdict/expected_reason stay empty.
    """
    directory = batch_dir(region_root, batch)
    directory.mkdir(parents=True, exist_ok=True)
    taken = set(read_manifest(directory / MANIFEST_NAME))
    rows: list[ManifestRow] = []
    for source in _xml_files(paths):
        stem = re.sub(r"[^A-Za-z0-9._-]", "_", source.stem) or "record"
        record_id, n = stem, 1
        while record_id in taken:
            n += 1
            record_id = f"{stem}-{n}"
        taken.add(record_id)
        target = directory / f"{record_id}.xml"
        shutil.copyfile(source, target)
        data = target.read_bytes()
        rows.append(ManifestRow(record_id, region, target.relative_to(region_root.resolve()).as_posix(),
                                hashlib.sha256(data).hexdigest(), len(data), "", ""))
    merge_manifest(directory, rows)
    return rows
