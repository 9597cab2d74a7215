"""A disk copy of the prepared fast schema, so that a new process does not re-read SAT's catalogues.

Preparing the fast schema (schema.py) streams ~8 MB of SAT's catalogue XSDs through libxml2 and
takes ~250,000 enumeration values out: ~0.5 s, the largest part of ``fiscalflow validate``'s own
start-up.  The result — the edited schema documents, the catalogues' values and the attributes
typed with them — depends only on SAT's files (satcfdi's copy) and on this package's code, so it is
kept in ``$XDG_CACHE_HOME/fiscalflow/`` (default ``~/.cache/fiscalflow/``) under a key hashed from
both (file names, sizes, modification times; the code's bytes).  Reading it back takes ~20 ms.

Plain data only: JSON, the numeric codes as base64 of native 8-byte integers; nothing in the file is
executed.  A file that is not the user's own (other owner, it or its directory writable by group or
others), unreadable, malformed or of another format is ignored and replaced.  When nothing can be written (a read-only
image, no home directory), every process prepares the schema itself, as before: the cache changes
start-up time, never a verdict.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.validate.cfdi.catalogs import Catalog, CatalogUse, CompactValues
from shared.cfdi.sat_files import sat_site

log = logging.getLogger(__name__)

FORMAT = 1
_PREFIX = "fast-schema-"


@dataclass(frozen=True, slots=True)
class PreparedSchema:
    """What compiling the fast schema needs, once SAT's documents have been read and edited."""

    imports: tuple[tuple[str, Path], ...]  # (namespace, schema document) the root schema imports
    edited: dict[Path, bytes]  # SAT's documents whose big enumerations were taken out
    uses: tuple[CatalogUse, ...]


def cache_dir() -> Path | None:
    """FISCALFLOW_SCHEMA_CACHE_DIR, else the XDG cache directory (Settings.schema_cache_path)."""
    from shared.settings import Settings

    return Settings().schema_cache_path()


def cache_key() -> str:
    """Changes whenever SAT's files or this package's code change."""
    digest = hashlib.sha256(f"{FORMAT}:{sys.byteorder}:{sys.version_info[:2]}".encode())
    site = sat_site()
    for path in sorted(site.rglob("*")):
        if path.is_file():
            st = path.stat()
            digest.update(f"{path.relative_to(site)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    digest.update(str(site).encode())
    for source in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(source.read_bytes())
    return digest.hexdigest()[:40]


def load(directory: Path | None, key: str) -> PreparedSchema | None:
    """The cached preparation for ``key``, or None (absent, not ours, unreadable or malformed)."""
    if directory is None:
        return None
    path = directory / f"{_PREFIX}{key}.json"
    try:
        with path.open("rb") as fh:
            if not all(_private(st) for st in (os.fstat(fh.fileno()), os.stat(directory))):
                log.warning("ignoring %s: it or its directory is not private to this user", path)
                return None
            return _decode(json.loads(fh.read()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        log.warning("ignoring the schema cache %s: %s", path, exc)
        return None


def _private(st: os.stat_result) -> bool:
    return st.st_uid == os.getuid() and not st.st_mode & 0o022


def store(directory: Path | None, key: str, prepared: PreparedSchema) -> None:
    """Write atomically (readers see the old file or the new one); other keys' files are removed."""
    if directory is None:
        return
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{_PREFIX}", dir=directory)  # mode 0600
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(json.dumps(_encode(prepared)).encode())
            os.replace(tmp, directory / f"{_PREFIX}{key}.json")
        except BaseException:
            os.unlink(tmp)
            raise
        for old in directory.glob(f"{_PREFIX}*.json"):
            if old.name != f"{_PREFIX}{key}.json":
                old.unlink(missing_ok=True)
    except OSError as exc:
        log.info("schema cache not written (%s): each process prepares the schema itself", exc)


def _encode(prepared: PreparedSchema) -> dict[str, Any]:
    catalogs: dict[int, int] = {}  # id(Catalog) → index: types derived from a catalogue share it
    encoded: list[dict[str, Any]] = []
    uses = []
    for use in prepared.uses:
        index = catalogs.setdefault(id(use.catalog), len(catalogs))
        if index == len(encoded):
            by_width, other = use.catalog.values.to_parts()
            encoded.append({"name": use.catalog.name, "whitespace": use.catalog.whitespace, "other": other,
                            "by_width": {str(w): base64.b64encode(raw).decode() for w, raw in by_width.items()}})
        uses.append([list(use.path), use.attribute, index])
    return {
        "format": FORMAT,
        "imports": [[ns, str(path)] for ns, path in prepared.imports],
        "edited": {str(path): body.decode("utf-8") for path, body in prepared.edited.items()},
        "catalogs": encoded,
        "uses": uses,
    }


def _decode(data: dict[str, Any]) -> PreparedSchema:
    if data["format"] != FORMAT:
        raise ValueError(f"format {data['format']}")
    catalogs = [Catalog(str(c["name"]), CompactValues.from_parts(
        {int(w): base64.b64decode(raw, validate=True) for w, raw in c["by_width"].items()},
        [str(v) for v in c["other"]]), str(c["whitespace"])) for c in data["catalogs"]]
    return PreparedSchema(
        imports=tuple((str(ns), Path(path)) for ns, path in data["imports"]),
        edited={Path(path): body.encode("utf-8") for path, body in data["edited"].items()},
        uses=tuple(CatalogUse(tuple(str(p) for p in path), str(attribute), catalogs[index])
                   for path, attribute, index in data["uses"]),
    )
