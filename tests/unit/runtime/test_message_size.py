"""The size policy's pure logic: which produce failures are permanent, and when a document travels
inline.  The producer refusal is librdkafka's own check (no broker involved)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from confluent_kafka import KafkaError, KafkaException

from shared.documents import (
    INLINE_SHARE,
    RUNTIME_HEADERS_BYTES,
    encode_document,
    inline_budget,
    message_bytes,
    receive_document,
    staging_key,
)
from shared.domain.messages import DOCUMENT_FRAME, CfdiFacts, DocumentRef, ValidatedDocument
from shared.domain.reasons import ReasonCode
from shared.runtime import headers as H
from shared.runtime.errors import PermanentError
from shared.runtime.kafka import AsyncProducer, DeliveryError, is_too_large, producer_config
from shared.runtime.runner import MessageTooLarge, OutputNotDelivered, delivery_failure
from shared.s3 import S3Store
from shared.settings import Settings

LIMIT = 1_000_000


@pytest.mark.parametrize("code", [KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE])
def test_size_refusals_are_too_large(code: int) -> None:
    assert is_too_large(KafkaError(code))
    assert DeliveryError.of(KafkaError(code)).too_large
    assert DeliveryError.raised(KafkaException(KafkaError(code))).too_large


@pytest.mark.parametrize("code", [KafkaError._MSG_TIMED_OUT, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN,
                                  KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.REQUEST_TIMED_OUT])
def test_outages_are_not(code: int) -> None:
    assert not is_too_large(KafkaError(code))
    assert not DeliveryError.of(KafkaError(code)).too_large


def test_the_producer_refuses_a_message_over_its_limit_as_too_large() -> None:
    settings = Settings(bootstrap_servers="127.0.0.1:9", message_max_bytes=10_000)
    config = producer_config(settings, "size-test")
    assert config["message.max.bytes"] == 10_000

    async def scenario() -> None:
        producer = AsyncProducer({**config, "log_level": 0})
        try:
            fut = producer.send("t", b"x" * 20_000, b"k")
            with pytest.raises(DeliveryError) as err:
                await asyncio.wait_for(fut, 5)
            assert err.value.too_large
        finally:
            producer.close(timeout=0.1)

    asyncio.run(scenario())


def test_a_size_refusal_is_permanent_and_names_the_size() -> None:
    sent = [("out", 10), ("big", 1_234_567)]
    failure = delivery_failure(sent, ["ok", DeliveryError("Broker: Message size too large", too_large=True)], LIMIT)
    assert isinstance(failure, MessageTooLarge)
    assert failure.details == {"size": 1_234_567, "limit": LIMIT, "topic": "big"}
    assert "1234567-byte message to big" in str(failure)


def test_an_outage_is_not_a_size_refusal_and_no_failure_is_none() -> None:
    failure = delivery_failure([("out", 10)], [DeliveryError("Local: Message timed out")], LIMIT)
    assert isinstance(failure, OutputNotDelivered) and not isinstance(failure, MessageTooLarge)
    assert delivery_failure([("out", 10)], ["ok"], LIMIT) is None
    # A size refusal anywhere among the outputs wins: retrying the outage would refuse it again.
    mixed = [DeliveryError("Local: Message timed out"), DeliveryError("too large", too_large=True)]
    assert isinstance(delivery_failure([("a", 1), ("b", 2)], mixed, LIMIT), MessageTooLarge)


# --- documents: inline or claim check ------------------------------------------------------------------


class FakeS3:
    """Records claim-check uploads (the decision is under test, not S3)."""

    bucket = "test"

    def __init__(self) -> None:
        self.puts: list[dict[str, Any]] = []

    async def client(self) -> FakeS3:
        return self

    async def put_object(self, **kwargs: Any) -> None:
        self.puts.append(kwargs)


def _ref(**extra: Any) -> DocumentRef:
    return DocumentRef(record_id="r-1", job_id="6f1d3c2e-0a4b-4c55-9a51-1f5a0d0f2a10", region="north",
                       path="b/r-1.xml", sha256="ab" * 32, size=0, **extra)


def _encode(doc: DocumentRef, data: bytes, limit: int = LIMIT, headers: dict[str, str] | None = None,
            s3: FakeS3 | None = None) -> tuple[DocumentRef, bytes, FakeS3]:
    s3 = s3 or FakeS3()
    body, value = asyncio.run(encode_document(doc, data, cast(S3Store, s3), limit, headers))
    return body, value, s3


def _largest_inline(limit: int, headers: dict[str, str]) -> int:
    lo, hi = 0, limit
    while lo < hi:
        mid = (lo + hi + 1) // 2
        body, _, _ = _encode(_ref(), b"x" * mid, limit, headers)
        lo, hi = (mid, hi) if body.xml is not None else (lo, mid - 1)
    return lo


def test_a_document_is_inline_exactly_while_its_message_fits_ninety_percent_of_the_limit() -> None:
    headers = {H.JOB_ID: "6f1d3c2e-0a4b-4c55-9a51-1f5a0d0f2a10"}
    n = _largest_inline(LIMIT, headers)
    body, value, s3 = _encode(_ref(), b"x" * n, LIMIT, headers)
    assert body.xml == b"x" * n and body.claim_key is None and not s3.puts
    assert message_bytes(value, "r-1", headers) <= inline_budget(LIMIT) == int(LIMIT * INLINE_SHARE)
    assert DocumentRef.decode(value).xml == b"x" * n  # what travels is what was measured
    # One byte more: the message would pass the budget, so the document waits in S3.
    body, value, s3 = _encode(_ref(), b"x" * (n + 1), LIMIT, headers)
    assert body.xml is None and body.claim_key == staging_key("r-1")
    assert [p["Key"] for p in s3.puts] == [staging_key("r-1")] and s3.puts[0]["Body"] == b"x" * (n + 1)
    assert len(value) < 1000
    # The document travels as its own bytes: all of the budget but the envelope and the headers
    # (base64 in JSON took a third of it: 660 KB before).
    assert inline_budget(LIMIT) - 2_000 < n < inline_budget(LIMIT) - RUNTIME_HEADERS_BYTES


def test_an_inline_document_travels_as_its_own_bytes_after_a_small_envelope() -> None:
    xml = '<?xml version="1.0" encoding="UTF-8"?><cfdi:Comprobante Total="1.00">ñ\n"\\</cfdi:Comprobante>'.encode()
    body, value, _ = _encode(_ref(), xml)
    assert value.startswith(DOCUMENT_FRAME) and value.endswith(xml), "the bytes as downloaded, not base64"
    assert len(value) - len(xml) < 300
    assert DocumentRef.decode(value) == body == _ref().model_copy(update={"xml": xml})
    assert DocumentRef.decode(value).xml == xml and DocumentRef.decode(_ref(xml=b"").encode()).xml == b""


def test_a_json_body_from_before_the_frame_is_still_read() -> None:
    """Messages in flight and dead letters written by an older stage (document base64 in JSON)."""
    old = _ref(xml=b"<x/>").model_dump_json(exclude_none=True).encode()
    assert old.startswith(b"{") and DocumentRef.decode(old).xml == b"<x/>"


@pytest.mark.parametrize("value", [DOCUMENT_FRAME, DOCUMENT_FRAME + (10_000).to_bytes(4, "big") + b"{}",
                                   DOCUMENT_FRAME + (2).to_bytes(4, "big") + b"{}<x/>", b"<x/>", b""])
def test_a_broken_body_is_a_malformed_message_dead_letter(value: bytes) -> None:
    with pytest.raises(PermanentError) as err:
        asyncio.run(receive_document(value, DocumentRef, cast(S3Store, FakeS3())))
    assert err.value.reason == ReasonCode.MALFORMED_MESSAGE


def test_the_old_inline_threshold_would_have_overflowed_the_limit() -> None:
    """0.9 MB travelled inline under the 1 MiB threshold: a 1.2 MB message, refused."""
    body, value, s3 = _encode(_ref(), b"<x/>" * 225_000)
    assert body.claim_key and s3.puts and len(value) < 1000


def test_validated_documents_decide_again_with_their_facts() -> None:
    facts = CfdiFacts(uuid="U" * 36, issuer_rfc="AAA010101AAA", receiver_rfc="BBB010101BBB",
                      fecha="2025-03-03T10:00:00", tipo="I", moneda="MXN", tipo_cambio=1, subtotal=1,
                      descuento=0, total=1, total_mxn=1,
                      conceptos=1, trust="demo")
    n = _largest_inline(LIMIT, {})
    assert _encode(_ref(), b"x" * n)[0].xml is not None
    facts = facts.model_copy(update={"issuer_rfc": "A" * 300})  # facts longer than a bare reference's fields
    doc = ValidatedDocument(**_ref().model_dump(), facts=facts)
    body, value, s3 = _encode(doc, b"x" * n)
    assert body.xml is None and body.claim_key == staging_key("r-1") and s3.puts
    assert ValidatedDocument.decode(value).facts == facts


def test_a_claimed_document_stays_claimed_without_a_second_upload() -> None:
    body, _, s3 = _encode(_ref(claim_key=staging_key("r-1")), b"small")
    assert body.claim_key == staging_key("r-1") and body.xml is None and not s3.puts


def test_runtime_headers_are_counted() -> None:
    assert message_bytes(b"v" * 10, "k", {"h": "v"}) == 10 + 1 + 2 + RUNTIME_HEADERS_BYTES
