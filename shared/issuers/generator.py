"""Demo invoices: sealed, stamped CFDI 4.0 documents, a configurable fraction deliberately bad.

``generate(i)`` is a pure function of (PKI, seed, window, i): the RNG is seeded per index, so
parallel workers produce the same bytes as one process. For mutation tests, ``build_tree`` gives
the unsigned tree and ``seal_and_stamp`` re-signs a tree after it has been changed.
"""

from __future__ import annotations

import multiprocessing
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Literal

from lxml import etree

from shared.issuers import defects
from shared.issuers.defects import Defect, Verdict
from shared.issuers.draft import InvoiceDraft, draft_invoice, make_receptors, uuid_from
from shared.issuers.pki import CERT_NOT_AFTER, CERT_NOT_BEFORE, DemoPKI
from shared.issuers.sealing import Sealer
from shared.issuers.xmltree import build_comprobante

DEFAULT_START = date(2025, 3, 3)
DEFAULT_DAYS = 7
Auto = Literal["auto"]


@dataclass(frozen=True, slots=True)
class GeneratedInvoice:
    record_id: str
    xml: bytes
    uuid: str
    issuer_rfc: str
    fecha: str
    tipo: str
    moneda: str
    tipo_cambio: Decimal | None
    subtotal: Decimal
    descuento: Decimal | None
    total: Decimal
    total_mxn: Decimal
    defect: str | None
    expected_verdict: str
    expected_reason: str


class InvoiceGenerator:
    def __init__(self, pki: DemoPKI, seed: int = 0, *, start: date = DEFAULT_START, days: int = DEFAULT_DAYS,
                 bad_fraction: float = 0.0) -> None:
        if days < 1:
            raise ValueError("the date window needs at least one day")
        first = datetime.combine(start, datetime.min.time(), CERT_NOT_BEFORE.tzinfo)
        if first < CERT_NOT_BEFORE or first.replace(day=1).toordinal() + days > CERT_NOT_AFTER.toordinal():
            raise ValueError(f"date window {start} + {days} days is outside the certificates' validity")
        if not 0.0 <= bad_fraction <= 1.0:
            raise ValueError("bad_fraction must be within [0, 1]")
        self.pki = pki
        self.seed = seed
        self.start = start
        self.days = days
        self.bad_fraction = bad_fraction
        self.sealer = Sealer(pki)
        self._receptors = make_receptors(seed)
        # A few issuers invoice much more than the rest, as in any real population.
        self._weights = [1.0 / (rank + 1) for rank in range(len(pki.issuers))]

    def _rng(self, index: int) -> random.Random:
        return random.Random(f"invoice:{self.seed}:{index}")

    def _draft(self, rng: random.Random, index: int, tipo: str | None, conceptos: int | None = None) -> InvoiceDraft:
        issuer = rng.choices(self.pki.issuers, weights=self._weights)[0]
        return draft_invoice(rng, issuer, self._receptors, 1000 + index, self.start, self.days, tipo, conceptos)

    def draft(self, index: int, tipo: str | None = None) -> InvoiceDraft:
        """The content of invoice ``index`` (what ``build_tree`` would write)."""
        return self._draft(self._rng(index), index, tipo)

    def build_tree(self, index: int = 0, tipo: str | None = None) -> etree._Element:
        """Unsigned ``cfdi:Comprobante`` of invoice ``index`` (no Sello, no TFD): mutate, then re-seal."""
        return build_comprobante(self.draft(index, tipo))

    def seal_and_stamp(self, root: etree._Element, uuid: str | None = None,
                       fecha_timbrado: str | None = None) -> bytes:
        """Seal with the issuer found by NoCertificado/Emisor RFC, stamp with the demo PAC; modifies ``root``."""
        return self.sealer.seal_and_stamp(root, uuid, fecha_timbrado)

    def generate(self, index: int, defect: Defect | Auto | None = "auto", tipo: str | None = None,
                 conceptos: int | None = None) -> GeneratedInvoice:
        """Invoice ``index``; ``defect="auto"`` draws one with probability ``bad_fraction``;
        ``conceptos``: that many concept lines (an ingreso), see ``generate_sized``."""
        rng = self._rng(index)
        record_id = uuid_from(rng)
        chosen = defects.pick_defect(rng, self.bad_fraction) if defect == "auto" else defect
        draft = self._draft(rng, index, tipo, conceptos)
        root = build_comprobante(draft)
        if chosen is Defect.TOTAL_MISMATCH:
            defects.shift_total(root, rng)
        uuid = uuid_from(rng).upper()
        xml = self.sealer.seal_and_stamp(root, uuid)
        if chosen is Defect.SELLO_TAMPERED:
            xml = defects.tamper_after_seal(xml, rng)
        elif chosen in (Defect.XML_TRUNCATED, Defect.XML_UNESCAPED_AMP):
            xml = defects.break_xml(xml, chosen, rng)
        verdict, reason = defects.EXPECTED[chosen] if chosen else (Verdict.VALID, "")
        if chosen is Defect.TOTAL_MISMATCH and draft.tipo == "P":
            reason = "TOTAL_NOT_ZERO"  # a payment's Total must be 0: that rule names the shifted total
        total = Decimal(root.get("Total", "0"))
        t = draft.totals
        return GeneratedInvoice(
            record_id=record_id, xml=xml, uuid=uuid, issuer_rfc=draft.issuer.rfc, fecha=root.get("Fecha", ""),
            tipo=draft.tipo, moneda=draft.moneda, tipo_cambio=draft.tipo_cambio, subtotal=t.subtotal,
            descuento=t.descuento, total=total, total_mxn=total * (draft.tipo_cambio or Decimal(1)),
            defect=chosen.value if chosen else None, expected_verdict=verdict.value, expected_reason=reason,
        )

    def generate_sized(self, index: int, target_bytes: int, tolerance: float = 0.02) -> GeneratedInvoice:
        """A valid invoice (sealed, stamped, no defect) of about ``target_bytes``: as many
        conceptos as it takes, within ``tolerance`` of the target when the lines allow it.

        Concept lines differ in size (taxes, discounts), so the count is estimated from the
        bytes per line of a first draft and corrected until the size lands (a few rounds).
        """
        base = self.generate(index, defect=None, conceptos=1)
        sizes = {1: len(base.xml)}
        n = 1
        for _ in range(8):
            if abs(sizes[n] - target_bytes) <= tolerance * target_bytes:
                break
            per_line = (sizes[n] - sizes[1]) / (n - 1) if n > 1 else 500.0
            n = max(1, n + round((target_bytes - sizes[n]) / max(per_line, 1.0)))
            if n in sizes:
                break
            sizes[n] = len(self.generate(index, defect=None, conceptos=n).xml)
        best = min(sizes, key=lambda k: abs(sizes[k] - target_bytes))
        return self.generate(index, defect=None, conceptos=best)

    def generate_many(self, count: int, start_index: int = 0, workers: int = 1) -> Iterator[GeneratedInvoice]:
        """Invoices ``start_index .. start_index+count-1`` in order; ``workers > 1`` uses processes."""
        if workers <= 1 or count < 2 * _CHUNK:
            for index in range(start_index, start_index + count):
                yield self.generate(index)
            return
        chunks = [(i, min(_CHUNK, start_index + count - i)) for i in range(start_index, start_index + count, _CHUNK)]
        args = (str(self.pki.directory), self.seed, self.start, self.days, self.bad_fraction)
        context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
        with context.Pool(workers, initializer=_init_worker, initargs=args) as pool:
            for batch in pool.imap(_generate_chunk, chunks):
                yield from batch


_CHUNK = 100
_worker: InvoiceGenerator | None = None


def _init_worker(pki_dir: str, seed: int, start: date, days: int, bad_fraction: float) -> None:
    global _worker
    _worker = InvoiceGenerator(DemoPKI.load(Path(pki_dir)), seed, start=start, days=days,
                               bad_fraction=bad_fraction)


def _generate_chunk(chunk: tuple[int, int]) -> list[GeneratedInvoice]:
    assert _worker is not None, "worker not initialised"
    first, size = chunk
    return [_worker.generate(i) for i in range(first, first + size)]
