"""Helpers shared by the store and report tests: generated invoices as stage messages, an isolated
topic namespace on the real broker, and reading a topic back."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from confluent_kafka import Message, Producer

from shared.domain.messages import CfdiFacts, StoredEvent, ValidatedDocument
from shared.runtime.admin import ensure_topics
from shared.settings import Settings
from shared.topics import DLQ, STORED, Stage, TopicSpec, input_topic, priority_topic, retry_topic
from tests.support.topics import reader_from_start
from tooling.issuers.generator import GeneratedInvoice


def facts_of(inv: GeneratedInvoice, uuid_override: str | None = None) -> CfdiFacts:
    """The facts the validator would extract (the generator knows them)."""
    return CfdiFacts(
        uuid=uuid_override or inv.uuid, issuer_rfc=inv.issuer_rfc, receiver_rfc="XAXX010101000", fecha=inv.fecha,
        tipo=inv.tipo, moneda=inv.moneda, tipo_cambio=inv.tipo_cambio or 1, subtotal=inv.subtotal,
        descuento=inv.descuento or 0, total=inv.total, total_mxn=inv.total_mxn, conceptos=1, trust="test",
    )


def validated(record_id: str, inv: GeneratedInvoice, job_id: str | None = None,
              uuid_override: str | None = None, region: str = "north") -> ValidatedDocument:
    return ValidatedDocument(record_id=record_id, job_id=job_id, region=region, path=f"t/{record_id}.xml",
                             sha256="0" * 64, size=len(inv.xml), xml=inv.xml,
                             facts=facts_of(inv, uuid_override))


def stored(record_id: str, inv: GeneratedInvoice, archived_at: str, job_id: str | None = None,
           region: str | None = None) -> StoredEvent:
    """``region`` None: an event from before the store stage sent it (the report asks the registry)."""
    return StoredEvent(record_id=record_id, job_id=job_id, s3_key=f"k/{record_id}", sha256="0" * 64,
                       size=len(inv.xml), gz_size=1, archived_at=archived_at, facts=facts_of(inv), region=region)


@dataclass
class Topics:
    """One isolated pipeline's topics on the shared broker."""

    settings: Settings
    ns: str

    @classmethod
    def create(cls, settings: Settings) -> Topics:
        t = cls(settings, "t" + uuid.uuid4().hex[:10])
        names = [input_topic(Stage.STORE), priority_topic(Stage.STORE), retry_topic(Stage.STORE), STORED, DLQ,
                 priority_topic(Stage.REPORT)]
        ensure_topics(settings, [TopicSpec(t.name(n), 2) for n in names])
        return t

    def name(self, topic: str) -> str:
        return f"{self.ns}.{topic}"

    def produce(self, topic: str, items: list[tuple[str, bytes]], headers: dict[str, str] | None = None) -> None:
        p = Producer({"bootstrap.servers": self.settings.bootstrap_servers, "partitioner": "murmur2_random"})
        for key, value in items:
            p.produce(self.name(topic), value, key=key.encode(),
                      headers=[(k, v.encode()) for k, v in (headers or {}).items()])
        assert p.flush(30) == 0

    def read(self, topic: str, keys: set[str], timeout: float = 60, at_least: int = 1,
             settle: float = 0.0) -> dict[str, list[Message]]:
        """Messages of ``topic`` whose key is in ``keys``: until each key has ``at_least`` of them (then
        ``settle`` more seconds, to see that nothing else arrives), or the timeout."""
        c = reader_from_start(self.settings, self.name(topic), timeout)
        found: dict[str, list[Message]] = {}
        deadline = time.monotonic() + timeout
        settled: float | None = None
        try:
            while time.monotonic() < deadline:
                for m in c.consume(500, 0.2):
                    if m.error() is None and (k := (m.key() or b"").decode()) in keys:
                        found.setdefault(k, []).append(m)
                if settled is None and all(len(found.get(k, [])) >= at_least for k in keys):
                    settled = time.monotonic() + settle
                if settled is not None and time.monotonic() >= settled:
                    break
        finally:
            c.close()
        return found
