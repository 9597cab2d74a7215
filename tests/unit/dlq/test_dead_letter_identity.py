"""A dead letter's identity: a copy written again by a stage that redid its input is the same
dead letter; a new failure is not.  ``fiscalflow dlq`` and the report decode with one codec."""

from __future__ import annotations

import json

from services.report.events import parse_dead_letter
from shared.dlq.model import DeadLetter, collapse_copies
from shared.runtime import headers as H

DLQ = "fiscal.dlq"


def _headers(**over: str) -> dict[str, str]:
    """Headers as StageRunner._dead_letter writes them for a first-delivery permanent failure."""
    h = {H.ORIGIN_TOPIC: "fiscal.validate", H.ORIGIN_PARTITION: "2", H.ORIGIN_OFFSET: "1041",
         H.ORIGIN_TIMESTAMP_MS: "1764740000000", H.STAGE: "validate", H.REASON: "INVALID_CFDI",
         H.ERROR_MESSAGE: "TOTAL_MISMATCH", H.ATTEMPT: "1", H.FIRST_FAILURE_MS: "1764740000100",
         H.LAST_FAILURE_MS: "1764740000100", H.TRACE_ID: "a" * 32, H.JOB_ID: "job-1",
         H.TRACEPARENT: f"00-{'a' * 32}-{'b' * 16}-01"}
    h.update(over)
    return h


def _letter(offset: int, headers: dict[str, str], record: str = "rec-1", ts: int = 1764740000200) -> DeadLetter:
    return DeadLetter.from_kafka(DLQ, 0, offset, ts, record.encode(), b'{"record_id": "rec-1"}', headers)


def _redone(**over: str) -> dict[str, str]:
    """The same input handled again after a kill: new failure times and a new trace, nothing else."""
    return _headers(**{H.FIRST_FAILURE_MS: "1764740009000", H.LAST_FAILURE_MS: "1764740009000",
                       H.TRACE_ID: "c" * 32, H.TRACEPARENT: f"00-{'c' * 32}-{'d' * 16}-01", **over})


def test_a_redone_copy_is_the_same_dead_letter() -> None:
    first = _letter(10, _headers())
    copy = _letter(57, _redone(), ts=1764740009100)
    assert first.letter_id == copy.letter_id
    # A retried input keeps its origin, so exhausted retries redone are one dead letter too.
    exhausted = _letter(11, _headers(**{H.REASON: "RETRIES_EXHAUSTED", H.ATTEMPT: "6"}))
    assert exhausted.letter_id == _letter(80, _redone(**{H.REASON: "RETRIES_EXHAUSTED", H.ATTEMPT: "6"}),
                                          ts=1764740099000).letter_id


def test_a_new_failure_is_another_dead_letter() -> None:
    base = _letter(10, _headers()).letter_id
    others = {
        "replayed": _letter(11, _redone(**{H.REPLAY_COUNT: "1"})),
        "another stage": _letter(12, _redone(**{H.STAGE: "store"})),
        "another input message": _letter(13, _redone(**{H.ORIGIN_OFFSET: "1042"})),
        "another origin partition": _letter(14, _redone(**{H.ORIGIN_PARTITION: "3"})),
        # The local broker's memory storage reuses offsets after a restart: the input's time differs.
        "a reused origin offset": _letter(15, _redone(**{H.ORIGIN_TIMESTAMP_MS: "1764750000000"})),
        "another record": _letter(16, _redone(), record="rec-2"),
    }
    ids = {name: dl.letter_id for name, dl in others.items()}
    assert base not in ids.values() and len(set(ids.values())) == len(ids), ids
    # Replay count 0 written or absent is the same pass.
    assert _letter(17, _redone(**{H.REPLAY_COUNT: "0"})).letter_id == base


def test_a_letter_without_origin_headers_is_only_itself() -> None:
    bare = {H.REASON: "CHECKSUM_MISMATCH", H.STAGE: "store"}
    a, b = _letter(3, bare), _letter(4, bare)
    assert a.letter_id != b.letter_id
    assert _letter(3, bare).letter_id == a.letter_id  # the same message read twice
    assert _letter(3, bare, ts=1).letter_id != a.letter_id  # a recreated topic's message at that offset


def test_collapse_keeps_the_first_copy_and_lists_the_others() -> None:
    other = _letter(11, _headers(**{H.STAGE: "download", H.REASON: "CHECKSUM_MISMATCH"}))
    letters = collapse_copies([_letter(10, _headers()), other, _letter(57, _redone()), _letter(90, _redone())])
    assert [(d.position, d.copies) for d in letters] == [("0:10", ("0:57", "0:90")), ("0:11", ())]
    assert json.loads(letters[0].model_dump_json())["copies"] == ["0:57", "0:90"]


def test_the_report_decodes_a_dead_letter_as_the_cli_does() -> None:
    h = _headers(**{H.DETAILS: json.dumps({"rules": ["TOTAL_MISMATCH"]})})
    cli = _letter(10, h)
    report = parse_dead_letter(DLQ, 0, 10, 1764740000200, b"rec-1", b'{"record_id": "rec-1"}', h)
    assert report.letter_id == cli.letter_id
    assert parse_dead_letter(DLQ, 0, 57, 1764740009100, b"rec-1", b"{}", _redone()).letter_id == cli.letter_id
    assert (report.record_id, report.stage, report.reason, report.attempt, report.job_id) == (
        "rec-1", "validate", "INVALID_CFDI", 1, "job-1")
    assert report.version == 1764740000100 and report.failed_at == cli.failed_at
    assert json.loads(report.details) == {"rules": ["TOTAL_MISMATCH"]}
    # Without a job header the job comes from the message body; without a reason it is malformed.
    bare = parse_dead_letter(DLQ, 1, 5, 1764740000300, b"rec-3", b'{"job_id": "job-9"}', {})
    assert (bare.job_id, bare.reason, bare.version) == ("job-9", "MALFORMED_MESSAGE", 1764740000300)
    assert DeadLetter.from_kafka(DLQ, 1, 5, 1, b"rec-3", b'{"job_id": "job-9"}', {}).job_id == "job-9"
    assert DeadLetter.from_kafka(DLQ, 1, 6, 1, b"rec-4", b"<cfdi:Comprobante/>", {}).job_id is None


def test_a_letter_without_a_job_header_takes_the_job_from_its_body_framed_or_json() -> None:
    from shared.domain.messages import DOCUMENT_FRAME, DocumentRef

    doc = DocumentRef(record_id="rec-1", job_id="job-7", region="north", path="a.xml", sha256="ab" * 32, size=4,
                      xml=b"<x/>")
    headers = {k: v for k, v in _headers().items() if k != H.JOB_ID}
    framed = DeadLetter.from_kafka(DLQ, 0, 1, 1, b"rec-1", doc.encode(), headers)
    legacy = DeadLetter.from_kafka(DLQ, 0, 2, 1, b"rec-1", doc.model_dump_json().encode(), headers)
    broken = DeadLetter.from_kafka(DLQ, 0, 3, 1, b"rec-1", DOCUMENT_FRAME + b"\xff\xff\xff\xff{", headers)
    xml = DeadLetter.from_kafka(DLQ, 0, 4, 1, b"rec-1", b'<cfdi job_id="x"/>', headers)
    assert (framed.job_id, legacy.job_id, broken.job_id, xml.job_id) == ("job-7", "job-7", None, None)
