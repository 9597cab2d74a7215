"""Manifests for ``fiscalflow register``: CSV with a header, or JSON lines; every row checked first.

Columns: record_id, region, path (relative to the region root), sha256, and optionally size.
Any bad row makes the whole manifest fail, with every problem and its line number, so nothing
is half-registered.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable

from shared.db.records import Registration
from shared.domain.records import RECORD_ID_RULE, valid_record_id
from shared.runtime import PermanentError
from shared.sftp.paths import safe_relative

REQUIRED = ("record_id", "region", "path", "sha256")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


class ManifestError(ValueError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__(f"{len(problems)} bad row(s):\n" + "\n".join(problems[:50]))
        self.problems = problems


def _rows(text: str) -> Iterable[tuple[int, object]]:
    """(line number, row) pairs; JSON lines when the first non-blank character is '{'."""
    if text.lstrip().startswith("{"):
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    yield n, json.loads(line)
                except json.JSONDecodeError as exc:
                    yield n, f"not JSON: {exc.msg}"
        return
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
    if missing:
        raise ManifestError([f"line 1: header lacks {', '.join(missing)}"])
    for row in reader:
        yield reader.line_num, row


def _check(n: int, row: object, regions: set[str]) -> Registration | str:
    if not isinstance(row, dict):
        return f"line {n}: {row if isinstance(row, str) else 'not an object'}"
    values = {k: row.get(k) for k in (*REQUIRED, "size")}
    problems = [f"{k} missing" for k in REQUIRED if not isinstance(values[k], str) or not values[k]]
    if problems:
        return f"line {n}: {', '.join(problems)}"
    rid, region, path, sha = (str(values[k]) for k in REQUIRED)
    if not valid_record_id(rid):
        problems.append(f"record_id {rid[:60]!r}: {RECORD_ID_RULE}")
    if region not in regions:
        problems.append(f"unknown region {region!r} (known: {', '.join(sorted(regions))})")
    try:
        safe_relative(path)
    except PermanentError as exc:
        problems.append(exc.message)
    if not _SHA256.fullmatch(sha):
        problems.append("sha256 is not 64 hex digits")
    size = values["size"]
    if size in (None, ""):
        size = None
    elif isinstance(size, int) and size >= 0:
        pass
    elif isinstance(size, str) and size.isdigit():
        size = int(size)
    else:
        problems.append(f"size {size!r} is not a non-negative integer")
    if problems:
        return f"line {n}: {'; '.join(problems)}"
    return Registration(rid, region, path, sha.lower(), size if isinstance(size, int) else None)


def parse_manifest(text: str, regions: Iterable[str]) -> list[Registration]:
    known = set(regions)
    good: list[Registration] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    for n, row in _rows(text):
        result = _check(n, row, known)
        if isinstance(result, str):
            problems.append(result)
            continue
        if result.record_id in seen:
            problems.append(f"line {n}: record_id {result.record_id!r} already on line {seen[result.record_id]}")
            continue
        seen[result.record_id] = n
        good.append(result)
    if problems:
        raise ManifestError(problems)
    return good
