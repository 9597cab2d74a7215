"""The store stage on the real broker, SeaweedFS and PostgreSQL: one object and one archived row per
UUID, duplicates dead-lettered, S3 outages retried (never dead letters)."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import asyncpg
import orjson
import pytest
from pydantic import SecretStr

from services.store.archive import build_archive_object
from services.store.service import build_stage
from shared.db.archive import ArchiveResult, archive
from shared.db.migrate import connect_pool
from shared.db.records import Registration, Transition, register
from shared.domain.messages import StoredEvent
from shared.domain.records import RecordStatus
from shared.runtime import headers as H
from shared.runtime.errors import TransientError
from shared.s3 import S3Store
from shared.settings import Settings
from shared.topics import DLQ, STORED, Stage, input_topic
from tests.integration.store.harness import Topics, validated
from tests.support.stages import stage_running
from tooling.issuers.generator import InvoiceGenerator
from tooling.stack import LocalStack

pytestmark = pytest.mark.integration

STORE_IN = input_topic(Stage.STORE)


@pytest.fixture
def topics(stack_settings: Settings) -> Iterator[Topics]:
    yield Topics.create(stack_settings)


@asynccontextmanager
async def store_running(settings: Settings, topics: Topics) -> AsyncIterator[None]:
    async with stage_running(settings, Stage.STORE, lambda host: build_stage(host, topic_namespace=topics.ns)):
        yield


async def _register(settings: Settings, ids: list[str]) -> None:
    conn = await asyncpg.connect(settings.pg_dsn.get_secret_value())
    try:
        await register(conn, [Registration(rid, "north", f"t/{rid}.xml") for rid in ids])
    finally:
        await conn.close()


async def _rows(settings: Settings, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(settings.pg_dsn.get_secret_value())
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def _object(settings: Settings, key: str) -> bytes:
    s3 = S3Store(settings)
    try:
        client = await s3.client()
        resp = await client.get_object(Bucket=settings.s3_bucket, Key=key)
        async with resp["Body"] as body:
            data: bytes = await body.read()
            return data
    finally:
        await s3.close()


async def _keys(settings: Settings, prefix: str) -> list[str]:
    s3 = S3Store(settings)
    try:
        client = await s3.client()
        resp = await client.list_objects_v2(Bucket=settings.s3_bucket, Prefix=prefix)
        return [o["Key"] for o in resp.get("Contents", [])]
    finally:
        await s3.close()


def _ids(n: int) -> list[str]:
    run = uuid.uuid4().hex[:8]
    return [f"store-{run}-{i}" for i in range(n)]


def test_same_document_stored_twice_is_one_object_one_row_one_event(
        stack_settings: Settings, topics: Topics, generator: InvoiceGenerator) -> None:
    inv = generator.generate(1, defect=None)
    rid, copy_rid = _ids(2)

    # Other tests archive documents of the same day and issuer into the same bucket: what counts is
    # what this test's records added under that prefix.
    prefix = f"{inv.fecha[:4]}/{inv.fecha[5:7]}/{inv.fecha[8:10]}/{inv.issuer_rfc}/"

    async def scenario() -> None:
        await connect_pool(stack_settings.pg_dsn.get_secret_value())  # migrated database
        await _register(stack_settings, [rid, copy_rid])
        before = set(await _keys(stack_settings, prefix))
        body = validated(rid, inv).encode()
        topics.produce(STORE_IN, [(rid, body), (rid, body)])  # a redelivery, back to back
        async with store_running(stack_settings, topics):
            first = await asyncio.to_thread(topics.read, STORED, {rid}, 60, 2)
            topics.produce(STORE_IN, [(rid, body)])  # and one after the record is archived
            again = await asyncio.to_thread(topics.read, STORED, {rid}, 60, 3)
            # The same bytes under another record id: one document per UUID is ever counted.
            topics.produce(STORE_IN, [(copy_rid, validated(copy_rid, inv).encode())])
            dead = await asyncio.to_thread(topics.read, DLQ, {copy_rid}, 60)
        assert len(first[rid]) == 2 and len(again[rid]) == 3
        events = [StoredEvent.model_validate_json(m.value()) for m in again[rid]]
        key = f"{prefix}{inv.uuid.upper()}.xml.gz"
        assert {e.s3_key for e in events} == {key}
        assert set(await _keys(stack_settings, prefix)) - before == {key}
        row = (await _rows(stack_settings, "SELECT * FROM fiscal_records WHERE record_id = $1", rid))[0]
        assert (row["status"], row["s3_key"], row["tfd_uuid"]) == ("archived", key, inv.uuid.upper())
        assert str(row["issued_on"]) == inv.fecha[:10] and row["size"] == len(inv.xml)
        # The archive is plain gzip (ISA-L's, decision 0030): any gzip reader gets the document back.
        archived = await _object(stack_settings, key)
        assert gzip.decompress(archived) == inv.xml and row["gz_size"] == len(archived) < len(inv.xml)
        audit = await _rows(stack_settings, "SELECT to_status FROM audit_events WHERE record_id = $1", rid)
        assert [a["to_status"] for a in audit] == ["archived"]
        headers = {k: v.decode() for k, v in dead[copy_rid][0].headers()}
        assert headers[H.REASON] == "DUPLICATE_UUID" and orjson.loads(headers[H.DETAILS])["same_document"]
        copy = (await _rows(stack_settings, "SELECT status, reason FROM fiscal_records WHERE record_id = $1",
                            copy_rid))[0]
        assert (copy["status"], copy["reason"]) == ("duplicate", "DUPLICATE_UUID")

    asyncio.run(scenario())


def test_an_object_an_earlier_delivery_left_is_kept_and_its_size_recorded(
        stack_settings: Settings, topics: Topics, generator: InvoiceGenerator) -> None:
    # A delivery uploaded the document and died before PostgreSQL; the next runs after an upgrade
    # that gzips otherwise (decision 0030; zlib 9 stands for the older bytes). The object stays, and
    # the registry and the event give its size, not that of the bytes this delivery made.
    inv = generator.generate(4, defect=None)
    (rid,) = _ids(1)
    key = f"{inv.fecha[:4]}/{inv.fecha[5:7]}/{inv.fecha[8:10]}/{inv.issuer_rfc}/{inv.uuid.upper()}.xml.gz"
    earlier = gzip.compress(inv.xml, compresslevel=9, mtime=0)

    async def scenario() -> None:
        await connect_pool(stack_settings.pg_dsn.get_secret_value())  # migrated database
        await _register(stack_settings, [rid])
        s3 = S3Store(stack_settings)
        try:
            client = await s3.client()
            await client.put_object(Bucket=stack_settings.s3_bucket, Key=key, Body=earlier,
                                    Metadata={"sha256": hashlib.sha256(inv.xml).hexdigest()})
        finally:
            await s3.close()
        topics.produce(STORE_IN, [(rid, validated(rid, inv).encode())])
        async with store_running(stack_settings, topics):
            got = await asyncio.to_thread(topics.read, STORED, {rid}, 60)
        event = StoredEvent.model_validate_json(got[rid][0].value())
        assert await _object(stack_settings, key) == earlier  # not overwritten
        assert len(earlier) != len(build_archive_object(inv.xml, event.facts, stack_settings.gzip_level).body)
        row = (await _rows(stack_settings, "SELECT status, gz_size FROM fiscal_records WHERE record_id = $1", rid))[0]
        assert (row["status"], row["gz_size"], event.gz_size, event.s3_key) == ("archived", len(earlier),
                                                                               len(earlier), key)

    asyncio.run(scenario())


def test_a_different_document_with_an_archived_uuid_is_a_duplicate_in_any_case(
        stack_settings: Settings, topics: Topics, generator: InvoiceGenerator) -> None:
    original = generator.generate(2, defect=None)
    # Another invoice, sealed and stamped with the archived UUID written in lower case.
    other_xml = generator.seal_and_stamp(generator.build_tree(3), uuid=original.uuid.lower())
    other = generator.generate(3, defect=None)
    rid, dup_rid = _ids(2)

    async def scenario() -> None:
        await _register(stack_settings, [rid, dup_rid])
        dup = validated(dup_rid, other, uuid_override=original.uuid.lower()).model_copy(update={"xml": other_xml})
        async with store_running(stack_settings, topics):
            topics.produce(STORE_IN, [(rid, validated(rid, original).encode())])
            await asyncio.to_thread(topics.read, STORED, {rid})
            topics.produce(STORE_IN, [(dup_rid, dup.encode())])
            dead = await asyncio.to_thread(topics.read, DLQ, {dup_rid})
        headers = {k: v.decode() for k, v in dead[dup_rid][0].headers()}
        assert headers[H.REASON] == "DUPLICATE_UUID" and headers[H.STAGE] == "store"
        details = orjson.loads(headers[H.DETAILS])
        assert details["archived_record_id"] == rid and details["same_document"] is False
        rows = {r["record_id"]: r for r in await _rows(
            stack_settings, "SELECT record_id, status, reason FROM fiscal_records WHERE record_id = ANY($1)",
            [rid, dup_rid])}
        assert rows[rid]["status"] == "archived"
        assert (rows[dup_rid]["status"], rows[dup_rid]["reason"]) == ("duplicate", "DUPLICATE_UUID")

    asyncio.run(scenario())


def test_the_unique_index_decides_a_race_between_two_documents_with_one_uuid(stack_settings: Settings) -> None:
    """Two records with one UUID (different case) in one batch: one archived, the other told it lost."""
    a, b = _ids(2)
    u = str(uuid.uuid4())

    def t(rid: str, tfd: str) -> Transition:
        return Transition(record_id=rid, to_status=RecordStatus.ARCHIVED, allowed_from=(RecordStatus.PENDING,),
                          stage="store", actor="test", idempotency_key=f"{rid}:archived",
                          fields={"tfd_uuid": tfd, "s3_key": f"k/{rid}"})

    async def scenario() -> None:
        await _register(stack_settings, [a, b])
        conn = await asyncpg.connect(stack_settings.pg_dsn.get_secret_value())
        try:
            results = await archive(conn, [t(a, u.upper()), t(b, u.lower())])
        finally:
            await conn.close()
        assert results == [ArchiveResult.APPLIED, ArchiveResult.UUID_TAKEN]

    asyncio.run(scenario())


def test_an_s3_outage_is_retried_and_never_dead_lettered(
        stack_settings: Settings, topics: Topics, generator: InvoiceGenerator) -> None:
    invs = [generator.generate(10 + i, defect=None) for i in range(5)]
    ids = _ids(len(invs))
    stack = LocalStack(stack_settings)

    async def scenario() -> None:
        await _register(stack_settings, ids)
        async with store_running(stack_settings, topics):
            await asyncio.to_thread(stack.stop, "s3")
            try:
                topics.produce(STORE_IN, [(rid, validated(rid, inv).encode()) for rid, inv in zip(ids, invs,
                                                                                                   strict=True)])
                await asyncio.sleep(4)  # the stage fails, retries, opens its S3 breaker and pauses
                pending = await _rows(stack_settings, "SELECT status FROM fiscal_records WHERE record_id = ANY($1)",
                                      ids)
                assert {r["status"] for r in pending} == {"pending"}
            finally:
                await asyncio.to_thread(stack.start, "s3")
            started = time.monotonic()
            out = await asyncio.to_thread(topics.read, STORED, set(ids), 90)
            recovered_s = time.monotonic() - started
        assert set(out) == set(ids), f"stored only {sorted(out)} ({recovered_s:.1f}s after S3 came back)"
        dead = await asyncio.to_thread(topics.read, DLQ, set(ids), 2)
        assert dead == {}
        rows = await _rows(stack_settings, "SELECT status FROM fiscal_records WHERE record_id = ANY($1)", ids)
        assert [r["status"] for r in rows] == ["archived"] * len(ids)

    asyncio.run(scenario())


def test_the_archive_put_signs_with_botocores_credential_chain(
        stack_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """``s3_credentials=chain``: no keys in the settings; the store finds them where botocore's chain
    does (here the AWS_* environment, as a pod's IRSA or instance role would supply them) and its
    fast PUT and its client both work against the real S3.  The metadata service is switched off:
    the chain never reaches for it in a test."""
    from services.store.archive import ArchiveObject
    from services.store.bucket import ArchiveBucket, PutOutcome

    for var in ("AWS_PROFILE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_SESSION_TOKEN",
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", stack_settings.s3_access_key.get_secret_value())
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", stack_settings.s3_secret_key.get_secret_value())
    chain = stack_settings.model_copy(update={"s3_credentials": "chain", "s3_access_key": SecretStr("unused"),
                                              "s3_secret_key": SecretStr("unused")})
    key = f"chain-test/{uuid.uuid4()}.xml.gz"
    obj = ArchiveObject(key=key, body=b"\x1f\x8b-not-really", sha256="ab" * 32, size=9, uuid="U",
                        issued_on="2026-12-03")

    async def put(settings: Settings) -> tuple[PutOutcome, int]:
        s3 = S3Store(settings)
        bucket = ArchiveBucket(s3)
        try:
            return await bucket.put_once(obj, "chain-record")
        finally:
            await bucket.close()
            await s3.close()

    assert asyncio.run(put(chain))[0] is PutOutcome.CREATED
    assert key in asyncio.run(_keys(chain, "chain-test/"))
    # Wrong credentials from the chain are refused by S3: the chain's keys are what signs.
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with pytest.raises(TransientError, match="HTTP 403"):
        asyncio.run(put(chain))
