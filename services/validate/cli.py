"""``fiscalflow validate``: judge CFDI files offline, one JSON line per document.

Exit status 0 whenever every input got a verdict (whatever the verdicts); 2 for usage errors
(a path that doesn't exist, an unreadable trust source).  Heavy imports (lxml schemas, satcfdi
files, cryptography) happen inside the command so ``fiscalflow --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    app.command("validate")(validate)


def _documents(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() == ".xml"))
        else:
            out.append(path)
    return out


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
            data = doc.read_bytes()
        except OSError as exc:
            typer.echo(f"error: {doc}: {exc.strerror}", err=True)
            raise typer.Exit(2) from exc
        result = duplicates.judge(validator.validate(data))
        line = {"file": str(doc), **result.to_json_dict()}
        out.write(orjson.dumps(line).decode() + "\n")
    out.flush()
