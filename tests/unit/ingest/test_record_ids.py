"""Record ids: one rule (shared/domain/records.py) at every entry — the API (see the integration
test's refusal table), manifests, the publisher, and producers' messages on the ingest topic."""

from __future__ import annotations

import pytest

from services.ingest.manifest import ManifestError, parse_manifest
from services.ingest.publisher import _encode_many
from services.ingest.requests import parse_request
from shared.domain.reasons import ReasonCode
from shared.domain.records import Priority, valid_record_id
from shared.runtime import Message, PermanentError

GOOD = ["a", "A-1_b.c", "0" * 200, "8f14e45f-ceea-467f-a7b5-1d2c3a4b5c6d"]
BAD = ["", "a b", "a/b", "../x", "ñandú", "x" * 201, "a\tb", "a'b", "a,b", "a\nb", "a:b"]


def test_the_rule() -> None:
    assert all(valid_record_id(r) for r in GOOD)
    assert not any(valid_record_id(r) for r in BAD)


@pytest.mark.parametrize("rid", BAD[1:])
def test_a_producers_message_with_a_bad_id_is_a_malformed_message_dead_letter(rid: str) -> None:
    for value in (f'{{"v":1,"record_id":"{rid}"}}'.encode(), rid.encode()):
        msg = Message(topic="fiscal.ingest", partition=0, offset=1, key=None, value=value, headers={}, timestamp_ms=0)
        with pytest.raises(PermanentError) as err:
            parse_request(msg)
        assert err.value.reason == ReasonCode.MALFORMED_MESSAGE


def test_the_publisher_refuses_a_bad_id_before_sending_anything() -> None:
    with pytest.raises(ValueError, match="letters"):
        list(_encode_many(["fine-1", "not fine"], None, Priority.NORMAL))


def test_a_manifest_with_a_bad_id_is_refused_with_its_line() -> None:
    text = ("record_id,region,path,sha256,size\n"
            f"good-1,north,b/good-1.xml,{'a' * 64},10\n"
            f"bad one,north,b/bad.xml,{'a' * 64},10\n")
    with pytest.raises(ManifestError, match=r"line 3: record_id .bad one.: 1 to 200"):
        parse_manifest(text, ["north"])
