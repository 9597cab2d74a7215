"""The publisher's bulk path: the same bytes as one ``IngestRequest`` per id, the record id rule
checked on the whole list at once, and a big batch sent in chunks that are all awaited."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable

import pytest

from services.ingest import publisher
from services.ingest.publisher import _encode_many, check_record_ids, encode, ingest_topic, publish
from shared.domain.records import Priority, valid_record_id
from shared.runtime.kafka import DeliveryError

GOOD = ["a", "A-1_b.c", "0" * 200, "8f14e45f-ceea-467f-a7b5-1d2c3a4b5c6d", "...", "-_-"]
BAD = ["", "a b", "a/b", "../x", "ñandú", "x" * 201, "a\tb", "a'b", "a,b", "a\nb", "a:b", "a\n", "\na", 'a"b',
       "a\\b", "a\n\nb"]


@pytest.mark.parametrize("job_id", [None, str(uuid.uuid4())])
@pytest.mark.parametrize("priority", list(Priority))
def test_the_bulk_encoding_is_the_models(job_id: str | None, priority: Priority) -> None:
    assert list(_encode_many(GOOD, job_id, priority)) == [encode(r, job_id, priority) for r in GOOD]


def test_the_list_check_is_the_rule_for_every_id() -> None:
    check_record_ids(GOOD)
    check_record_ids([])
    for bad in BAD:
        assert not valid_record_id(bad)
        for ids in ([bad], ["ok", bad], [bad, "ok"], ["ok", bad, "ok-2"]):
            with pytest.raises(ValueError, match="letters") as err:
                check_record_ids(ids)
            assert repr(bad[:60]) in str(err.value)  # the first bad id is named
    for ids in ([1, "a"], ["a", None], [b"a"]):
        with pytest.raises(ValueError, match="letters"):
            check_record_ids(ids)  # type: ignore[arg-type]


class FakeProducer:
    """Records what each ``send_many`` got; ``fail``: the chunk index whose delivery fails."""

    def __init__(self, fail: int | None = None) -> None:
        self.batches: list[list[tuple[bytes, bytes, list[tuple[str, bytes]]]]] = []
        self.fail = fail
        self.finished = 0

    async def send_many(self, topic: str, messages: Iterable[tuple[bytes, bytes, list[tuple[str, bytes]]]]) -> int:
        assert topic == ingest_topic(Priority.NORMAL, "ns")
        batch = list(messages)  # produced synchronously, like the real producer
        index = len(self.batches)
        self.batches.append(batch)
        await asyncio.sleep(0.01)  # the broker's acknowledgement
        self.finished += 1
        if index == self.fail:
            raise DeliveryError("broker down")
        return len(batch)


def test_a_big_batch_goes_in_chunks_in_order_and_every_chunk_is_awaited(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(publisher, "CHUNK", 4)
    ids = [f"r-{n:03d}" for n in range(10)]
    job = str(uuid.uuid4())
    producer = FakeProducer()
    sent = asyncio.run(publish(producer, iter(ids), Priority.NORMAL, job, "ns"))  # type: ignore[arg-type]
    assert sent == 10 and [len(b) for b in producer.batches] == [4, 4, 2]
    assert [m for b in producer.batches for m in b] == [encode(r, job, Priority.NORMAL) for r in ids]

    failing = FakeProducer(fail=1)
    with pytest.raises(DeliveryError, match="broker down"):
        asyncio.run(publish(failing, ids, Priority.NORMAL, job, "ns"))  # type: ignore[arg-type]
    assert failing.finished == 3  # the other chunks were still waited for


def test_a_bad_id_anywhere_refuses_the_batch_before_anything_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(publisher, "CHUNK", 4)
    producer = FakeProducer()
    ids = [*(f"r-{n}" for n in range(9)), "not fine"]
    with pytest.raises(ValueError, match="letters"):
        asyncio.run(publish(producer, ids, Priority.NORMAL, None, "ns"))  # type: ignore[arg-type]
    assert producer.batches == []
