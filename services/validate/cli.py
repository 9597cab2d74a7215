"""``fiscalflow validate``: judge CFDI files offline, one JSON line per document.

Exit status 0 whenever every input got a verdict (whatever the verdicts); 2 for usage errors
(a path that doesn't exist, an unreadable trust source).  Heavy imports (lxml schemas, satcfdi
files, cryptography) happen inside the command so ``fiscalflow --help`` stays fast.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    app.command("validate")(validate)


def _documents(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            # sorted as pathlib sorts Paths (part by part): the order ``sorted(path.rglob(...))`` gave
            found = sorted(_xml_files(str(path)), key=lambda p: p.split(os.sep))
            out.extend(map(Path, found))
        else:
            out.append(path)
    return out


def _xml_files(directory: str) -> Iterator[str]:
    """``*.xml`` files (any case) under ``directory``, as ``Path.rglob`` finds them — symbolic links
    to files count, linked directories are not entered, unreadable directories are skipped — with
    one ``scandir`` per directory instead of a ``stat`` per file (~10x faster on 3,000 files)."""
    try:
        with os.scandir(directory) as it:
            entries = list(it)
    except PermissionError:
        return
    for entry in entries:
        try:
            is_dir = entry.is_dir() and not entry.is_symlink()
            is_xml = not is_dir and _has_xml_suffix(entry.name) and entry.is_file()
        except OSError:
            continue  # vanished or unreadable entry: rglob + is_file skipped it too
        if is_dir:
            yield from _xml_files(entry.path)
        elif is_xml:
            yield entry.path


def _has_xml_suffix(name: str) -> bool:
    dot = name.rfind(".")  # pathlib's suffix: not a leading dot, not a trailing one
    return 0 < dot < len(name) - 1 and name[dot:].lower() == ".xml"


def _read(path: Path) -> bytes:
    with open(path, "rb", buffering=0) as fh:  # one read of the whole file, no buffer copy
        return fh.readall()


def validate(
    paths: Annotated[list[Path], typer.Argument(help="CFDI files or directories (searched recursively for *.xml).")],
    trust_ca: Annotated[list[str] | None, typer.Option(
        "--trust-ca", help="Extra trusted CA: a certificate, a directory or a .zip; `LABEL=PATH` names its "
                           "trust level. Repeatable. Default: $FISCALFLOW_TRUST_CA (':'-separated).")] = None,
    stamp_certs: Annotated[str | None, typer.Option(
        "--stamp-certs", help="Directory of stamping certificates named <NoCertificadoSAT>.cer. "
                              "Default: $FISCALFLOW_STAMP_CERTS.")] = None,
    no_production_ca: Annotated[bool, typer.Option(
        "--no-production-ca", help="Do not trust SAT's production CA (bundled with satcfdi).")] = False,
) -> None:
    """Validate CFDI 4.0 documents (L0–L4) and print one JSON line per document."""
    import orjson

    from services.validate.cfdi import CfdiValidator, RunDuplicates, StampCertStore, TrustStore
    from shared.settings import get_settings

    settings = get_settings()
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        typer.echo(f"error: no such file or directory: {', '.join(missing)}", err=True)
        raise typer.Exit(2)
    sources = trust_ca if trust_ca else [s for s in settings.trust_ca.split(":") if s]
    stamp_dir = stamp_certs if stamp_certs is not None else settings.stamp_certs
    try:
        trust = TrustStore.default(sources, include_production=not no_production_ca)
        stamps = StampCertStore.from_directory(stamp_dir or None)
    except (OSError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc

    validator = CfdiValidator(trust, stamps, max_bytes=settings.max_document_bytes)
    duplicates = RunDuplicates()
    out = typer.get_text_stream("stdout")
    for doc in _documents(paths):
        try:
            data = _read(doc)
        except OSError as exc:
            typer.echo(f"error: {doc}: {exc.strerror}", err=True)
            raise typer.Exit(2) from exc
        result = duplicates.judge(validator.validate(data))
        line = {"file": str(doc), **result.to_json_dict()}
        out.write(orjson.dumps(line).decode() + "\n")
    out.flush()
