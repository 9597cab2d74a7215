"""The deliberately bad fraction: what each defect does and which verdict it must produce.

Each defect breaks exactly one thing. Content defects re-seal after the change so only the target
rule fails; SELLO_TAMPERED edits after sealing; the transport defects leave the XML intact and
are applied by whoever writes the manifest (output.py).
"""

from __future__ import annotations

import random
from decimal import ROUND_CEILING, Decimal
from enum import StrEnum

from lxml import etree


class Defect(StrEnum):
    XML_TRUNCATED = "xml_truncated"
    XML_UNESCAPED_AMP = "xml_unescaped_amp"
    TOTAL_MISMATCH = "total_mismatch"
    SELLO_TAMPERED = "sello_tampered"
    CHECKSUM_MISMATCH = "checksum_mismatch"
    FILE_NOT_FOUND = "file_not_found"


class Verdict(StrEnum):
    VALID = "valid"
    INVALID = "invalid"      # reaches the validator and fails a rule
    REJECTED = "rejected"    # never reaches the validator: the download stage refuses it


EXPECTED: dict[Defect, tuple[Verdict, str]] = {
    Defect.XML_TRUNCATED: (Verdict.INVALID, "XML_MALFORMED"),
    Defect.XML_UNESCAPED_AMP: (Verdict.INVALID, "XML_MALFORMED"),
    Defect.TOTAL_MISMATCH: (Verdict.INVALID, "TOTAL_MISMATCH"),
    Defect.SELLO_TAMPERED: (Verdict.INVALID, "SELLO_INVALID"),
    Defect.CHECKSUM_MISMATCH: (Verdict.REJECTED, "CHECKSUM_MISMATCH"),
    Defect.FILE_NOT_FOUND: (Verdict.REJECTED, "FILE_NOT_FOUND"),
}
TRANSPORT_DEFECTS = frozenset({Defect.CHECKSUM_MISMATCH, Defect.FILE_NOT_FOUND})
# Weights: broken content more often than broken transport, like real feeds.
_WEIGHTS = {Defect.XML_TRUNCATED: 2, Defect.XML_UNESCAPED_AMP: 1, Defect.TOTAL_MISMATCH: 3,
            Defect.SELLO_TAMPERED: 3, Defect.CHECKSUM_MISMATCH: 1, Defect.FILE_NOT_FOUND: 1}


def pick_defect(rng: random.Random, bad_fraction: float) -> Defect | None:
    if rng.random() >= bad_fraction:
        return None
    return rng.choices(list(_WEIGHTS), weights=list(_WEIGHTS.values()))[0]


def shift_total(root: etree._Element, rng: random.Random) -> None:
    """Before sealing: Total off by 0.01–50.00 (whole cents, so only TOTAL_MISMATCH fails)."""
    delta = Decimal(rng.randint(1, 5000)) / 100
    if root.get("Moneda") == "XXX":
        # A payment's amounts are whole units: a delta under 0.50 would round away, leaving a valid
        # document labelled invalid (the chaos run that "lost" one record).
        root.set("Total", str(Decimal(root.get("Total", "0")) + delta.to_integral_value(rounding=ROUND_CEILING)))
        return
    root.set("Total", f"{Decimal(root.get('Total', '0')) + delta:.2f}")


def tamper_after_seal(xml: bytes, rng: random.Random) -> bytes:
    """After sealing: change a digit of the Folio, which the cadena includes and no other rule reads."""
    marker = b' Folio="'
    at = xml.index(marker) + len(marker)
    old = xml[at:at + 1]
    new = str((int(old) + rng.randint(1, 9)) % 10).encode() if old.isdigit() else b"9"
    return xml[:at] + new + xml[at + 1:]


def break_xml(xml: bytes, defect: Defect, rng: random.Random) -> bytes:
    if defect is Defect.XML_TRUNCATED:
        cut = int(len(xml) * rng.uniform(0.2, 0.9))
        while cut > 0 and xml[cut] & 0xC0 == 0x80:  # never inside a UTF-8 character: that is XML_ENCODING
            cut -= 1
        return xml[:cut]
    # An unescaped & inside an attribute, as sloppy string-templating issuers produce.
    return xml.replace(b' Folio="', b' Folio="A&B ', 1)
