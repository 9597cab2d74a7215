"""The validate stage on the real broker and PostgreSQL: verdicts route documents on or to the DLQ."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from shared.db.migrate import connect_pool
from shared.db.records import Registration, lookup, register
from shared.domain.messages import DocumentRef, ValidatedDocument
from shared.runtime import headers as H
from shared.settings import Settings
from shared.topics import DLQ, Stage, input_topic
from tests.support.stages import RunningStage
from tests.support.topics import reader_from_start
from tooling.issuers.defects import Defect
from tooling.issuers.generator import InvoiceGenerator
from tooling.issuers.pki import DemoPKI

pytestmark = pytest.mark.integration


def _read(settings: Settings, topic: str, keys: set[bytes], timeout: float = 60) -> dict[bytes, object]:
    c = reader_from_start(settings, topic, timeout)
    found: dict[bytes, object] = {}
    deadline = time.monotonic() + timeout
    try:
        while len(found) < len(keys) and time.monotonic() < deadline:
            for m in c.consume(500, 0.2):
                if m.error() is None and m.key() in keys:
                    found[m.key()] = m
    finally:
        c.close()
    return found


def test_valid_documents_go_on_and_invalid_ones_dead_letter_with_their_rule(
        stack_settings: Settings, tmp_path: Path) -> None:
    pki = DemoPKI.ensure(tmp_path / "pki", issuers=4)
    settings = stack_settings.model_copy(update={"trust_ca": str(pki.ca_cert),
                                                 "stamp_certs": str(pki.stamp_certs_dir)})
    gen = InvoiceGenerator(pki, seed=7)
    prefix = uuid.uuid4().hex[:8]
    docs = [gen.generate(i, defect=None) for i in range(12)]
    docs += [gen.generate(100, defect=Defect.TOTAL_MISMATCH), gen.generate(101, defect=Defect.SELLO_TAMPERED),
             gen.generate(102, defect=Defect.XML_TRUNCATED)]
    ids = {f"{prefix}-{i}": d for i, d in enumerate(docs)}

    async def scenario() -> None:
        pool = await connect_pool(settings.pg_dsn.get_secret_value())
        async with pool.acquire() as conn:
            await register(conn, [Registration(rid, "north", f"b/{rid}.xml") for rid in ids])
        p = Producer({"bootstrap.servers": settings.bootstrap_servers})
        for rid, d in ids.items():
            ref = DocumentRef(record_id=rid, region="north", path=f"b/{rid}.xml", sha256="0" * 64,
                              size=len(d.xml), xml=d.xml)
            p.produce(input_topic(Stage.VALIDATE), ref.encode(), key=rid.encode())
        p.flush()
        running = await RunningStage.start(settings, Stage.VALIDATE)
        valid = {rid.encode() for rid, d in ids.items() if d.expected_verdict == "valid"}
        invalid = {rid.encode() for rid, d in ids.items() if d.expected_verdict != "valid"}
        out = await asyncio.to_thread(_read, settings, input_topic(Stage.STORE), valid)
        dead = await asyncio.to_thread(_read, settings, DLQ, invalid)
        await running.stop()
        assert set(out) == valid
        for key, m in out.items():
            doc = ValidatedDocument.decode(m.value())  # type: ignore[attr-defined]
            src = ids[key.decode()]
            assert doc.facts.uuid == src.uuid.upper()
            assert doc.facts.total == src.total and doc.facts.total_mxn == src.total_mxn
            assert doc.xml == src.xml
        assert set(dead) == invalid
        for key, m in dead.items():
            headers = {k: v.decode() for k, v in m.headers()}  # type: ignore[attr-defined]
            assert headers[H.REASON] == ids[key.decode()].expected_reason
            assert headers[H.STAGE] == "validate"
            assert ids[key.decode()].expected_reason in orjson.loads(headers[H.DETAILS])["rules"]
        async with pool.acquire() as conn:
            rows = await lookup(conn, [k.decode() for k in invalid])
        assert {r.status.value for r in rows.values()} == {"rejected"}
        await pool.close()

    asyncio.run(scenario())
