"""Record ids and dead-letter ids that need escaping reach embedded ClickHouse intact through the
report sink's existence checks: written once, a second write of the same events adds nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

_WRITER = r'''
import datetime as dt, json, sys
from decimal import Decimal
from services.report.events import Archived, DeadLetter
from services.report.sink import ClickHouseSink, connect, create_schema

ids = ["r'quote", "r\\back", "r`tick", "r\ttab", "r\nline", "r%(ids)s"]
at = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
def archived(i, rid):
    return Archived(record_id=rid, uuid=f"00000000-0000-4000-8000-{i:012d}", issuer_rfc="AAA010101AAA",
                    receiver_rfc="XAXX010101000", day=dt.date(2026, 1, 2), fecha="2026-01-02T10:00:00", tipo="I",
                    moneda="MXN", tipo_cambio=Decimal(1), total=Decimal("116.00"), total_mxn=Decimal("116.00"),
                    job_id="j", s3_key=f"k{i}", archived_at=at, version=1, lines=None, lines_in_archive=True,
                    region="north")
events = [archived(i, rid) for i, rid in enumerate(ids)]
events.append(DeadLetter(letter_id="l'1\\x", record_id="d'1", stage="validate", reason="XSD_INVALID", error="e",
                         details="", origin_topic="t", attempt=1, job_id="j", failed_at=at, version=1,
                         region="north"))
sink = ClickHouseSink(connect("chdb://" + sys.argv[1]))
create_schema(sink.client)
first, again = sink.write(events), sink.write(events)
stored = sorted(r[0] for r in sink.client.query("SELECT record_id FROM archived FINAL").result_rows)
print(json.dumps({"first": [first.archived, first.outcomes, first.dead_letters],
                  "again": [again.archived, again.outcomes, again.dead_letters], "stored": stored, "ids": sorted(ids)}))
'''


def test_ids_that_need_escaping_are_written_once(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", _WRITER, str(tmp_path / "ch")], capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["first"] == [6, 7, 1]
    assert got["again"] == [0, 0, 0]
    assert got["stored"] == got["ids"]
