"""The archive object of a document: deterministic key, gzip bytes and checksums (pure, no I/O)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from isal import igzip

from shared.domain.messages import CfdiFacts

_FECHA_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})")
_SAFE_RFC = re.compile(r"^[A-ZÑ&0-9]{12,13}$")


class BadFacts(ValueError):
    """The facts cannot name an archive key (a validator bug or a forged message)."""


@dataclass(frozen=True, slots=True)
class ArchiveObject:
    key: str
    body: bytes  # gzip of the document
    sha256: str  # of the document as downloaded (not of the gzip)
    size: int
    uuid: str  # upper case
    issued_on: str  # YYYY-MM-DD, the date part of Fecha as written


def archive_key(facts: CfdiFacts) -> tuple[str, str, str]:
    """``YYYY/MM/DD/<issuer RFC>/<TFD UUID>.xml.gz`` with the date as written (no time zone math:
    Fecha is local time of the place of issue and the day reported is the day written)."""
    m = _FECHA_DATE.match(facts.fecha)
    if not m:
        raise BadFacts(f"Fecha {facts.fecha!r} has no date part")
    rfc = facts.issuer_rfc.upper()
    if not _SAFE_RFC.match(rfc):
        raise BadFacts(f"issuer RFC {facts.issuer_rfc!r} cannot be part of a key")
    uuid = facts.uuid.strip().upper()
    if not re.fullmatch(r"[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}", uuid):
        raise BadFacts(f"TFD UUID {facts.uuid!r} is not a UUID")
    year, month, day = m.groups()
    return f"{year}/{month}/{day}/{rfc}/{uuid}.xml.gz", uuid, f"{year}-{month}-{day}"


def build_archive_object(xml: bytes, facts: CfdiFacts, level: int) -> ArchiveObject:
    """``level``: Settings.gzip_level, ISA-L's (0-3).

    ISA-L's gzip, not zlib's: at level 3 it took 22 µs for a generated invoice of 5.5 KB against
    zlib's 64 µs at level 6, for objects 2.3 % larger (decision 0030).  The format is plain gzip:
    any gzip reader opens the archive."""
    key, uuid, issued_on = archive_key(facts)
    # mtime=0: with the same library and level, the same document gzips to the same bytes.
    body = igzip.compress(xml, compresslevel=level, mtime=0)
    return ArchiveObject(key=key, body=body, sha256=hashlib.sha256(xml).hexdigest(), size=len(xml), uuid=uuid,
                         issued_on=issued_on)
