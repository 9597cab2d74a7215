"""Hostile and broken input through the running pipeline and its APIs: each gets its reason (a
dead letter with a stable reason code, or a 4xx saying why) and no service crashes."""

from __future__ import annotations

import hashlib
import random
import uuid
from pathlib import Path

import httpx
import pytest

from tests.faults.world import World
from tooling.issuers.output import ManifestRow, batch_dir, merge_manifest

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

BATCH = "hostile"
CFDI_NS = 'xmlns:cfdi="http://www.sat.gob.mx/cfd/4" Version="4.0"'
# Ten levels of ten: expanded, a gigabyte of "lol".
LAUGHS = ('<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol0 "lol">'
          + "".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10))
          + f']>\n<cfdi:Comprobante {CFDI_NS} Serie="&lol9;"/>').encode()
XXE = (f'<?xml version="1.0"?>\n<!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n'
       f'<cfdi:Comprobante {CFDI_NS} Serie="&xxe;"/>').encode()


def _reason(resp: httpx.Response) -> str:
    """The why of a refusal: every API answers ``{"error": CODE, "detail": WHY}`` (shared/http_errors.py)."""
    body = resp.json()
    assert set(body) == {"error", "detail"} and isinstance(body["detail"], str), body
    return str(body["detail"])


def _hostile_files(world: World) -> dict[str, tuple[bytes, str]]:
    """record id -> (file content, reason its dead letter must carry)."""
    valid = world.generate("north", "hostile-src", 1, seed=7300)[0][0].xml
    latin = valid.decode("utf-8").replace('encoding="UTF-8"', 'encoding="ISO-8859-1"')
    return {
        "hostile-billion-laughs": (LAUGHS, "XML_DOCTYPE_FORBIDDEN"),
        "hostile-xxe": (XXE, "XML_DOCTYPE_FORBIDDEN"),
        "hostile-50mb": (b"<?xml version='1.0'?><a>" + b"x" * (50 * 1024 * 1024) + b"</a>", "DOCUMENT_TOO_LARGE"),
        "hostile-garbage": (random.Random(73).randbytes(8192), "XML_ENCODING"),
        "hostile-latin1": ((latin + "<!-- año -->").encode("latin-1"), "XML_ENCODING"),
        "hostile-empty": (b"", "XML_MALFORMED"),
        "hostile-json-error-body": (b'{"error": "not found", "status": 404}', "XML_MALFORMED"),
        "hostile-wrong-checksum": (valid, "CHECKSUM_MISMATCH"),
    }


def test_hostile_documents_dead_letter_with_their_reason_and_nothing_crashes(world: World) -> None:
    files = _hostile_files(world)
    root = world.settings.region_root("north")
    directory = batch_dir(root, BATCH)
    directory.mkdir(parents=True, exist_ok=True)
    rows = []
    for rid, (content, reason) in files.items():
        path = directory / f"{rid}.xml"
        path.write_bytes(content)
        digest = hashlib.sha256(content + (b"!" if reason == "CHECKSUM_MISMATCH" else b"")).hexdigest()
        rows.append(ManifestRow(rid, "north", path.relative_to(root).as_posix(), digest, len(content), "", ""))
    merge_manifest(directory, rows)
    unknown = [f"never-registered-{uuid.uuid4()}" for _ in range(2)]

    jobs = [world.submit({"source": {"region": "north", "pattern": f"{BATCH}/*.xml"}}),
            world.submit({"record_ids": unknown})]
    states = world.wait_jobs(jobs, timeout=120)
    assert states[0]["counts"] == {"rejected": len(files)}, states[0]
    assert states[1]["counts"] == {"unknown": len(unknown)}, states[1]

    letters = world.dead_letters([*files, *unknown])
    got = {rid: [dl.reason for dl in dls] for rid, dls in letters.items()}
    assert got == {**{rid: [reason] for rid, (_, reason) in files.items()},
                   **{rid: ["UNKNOWN_RECORD"] for rid in unknown}}
    # The entity was never expanded: the dead letter of the bomb holds the document as it was sent.
    assert {r["record_id"]: r["reason"] for r in world.records(list(files)).values()} == {
        rid: reason for rid, (_, reason) in files.items()}

    world.assert_alive()
    assert set(world.health().values()) == {200}


def test_the_apis_refuse_traversal_unknown_ids_and_bad_manifests_with_a_reason(world: World, tmp_path: Path) -> None:
    evil = ["../*.xml", "../../etc/*", "a/../../*.xml", "..", "/etc/passwd", "//etc/*", "outage/../../*",
            "./../*", "*/../../*", "\\..\\*.xml", "~/*", "..\\..\\*"]
    with httpx.Client(timeout=30) as http:
        for pattern in evil:
            resp = http.post(f"{world.ingest}/api/v1/jobs", headers=world.auth,
                             json={"source": {"region": "north", "pattern": pattern}})
            assert 400 <= resp.status_code < 500 and _reason(resp), (pattern, resp.status_code, resp.text)
        # Callback URLs that reach inward (SSRF): refused at submission with why, before any
        # connection (literal addresses: nothing is resolved) and before a job exists.
        jobs_before = world.db("SELECT count(*) AS n FROM jobs")[0]["n"]
        for callback in ("http://169.254.169.254/latest/meta-data/", "https://169.254.169.254/", "https://10.0.0.1/h",
                         "https://127.0.0.1:8443/h", "https://[::1]/h", "http://hooks.example.invalid/h"):
            rid = f"ssrf-{uuid.uuid4()}"
            resp = http.post(f"{world.ingest}/api/v1/jobs", headers=world.auth,
                             json={"record_ids": [rid], "callback_url": callback})
            assert resp.status_code == 400 and _reason(resp).startswith("callback_url refused"), (callback, resp.text)
        assert world.db("SELECT count(*) AS n FROM jobs")[0]["n"] == jobs_before
        for url in (f"{world.ingest}/api/v1/jobs/{uuid.uuid4()}", f"{world.report}/api/v1/jobs/{uuid.uuid4()}",
                    f"{world.report}/api/v1/records/never-registered-{uuid.uuid4()}"):
            resp = http.get(url, headers=world.read_auth)
            assert resp.status_code == 404 and _reason(resp), (url, resp.text)
        for url in (f"{world.ingest}/api/v1/jobs/..%2F..%2Fetc%2Fpasswd", f"{world.ingest}/api/v1/jobs/not-a-uuid"):
            resp = http.get(url, headers=world.read_auth)
            assert 400 <= resp.status_code < 500 and resp.status_code != 401, (url, resp.status_code, resp.text)

    # A manifest naming a path outside the region root is refused whole, with the line and why.
    bad = tmp_path / "MANIFEST.csv"
    rid = f"traversal-{uuid.uuid4()}"
    bad.write_text("record_id,region,path,sha256,size\n"
                   f"{rid},north,../../etc/passwd,{'0' * 64},10\n"
                   f"{rid}-abs,north,/etc/passwd,{'0' * 64},10\n")
    done = world.cli("register", str(bad), check=False)
    assert done.returncode != 0
    assert "line 2" in done.stdout + done.stderr and "line 3" in done.stdout + done.stderr, done
    assert world.records([rid, f"{rid}-abs"]) == {}

    # A record id is global: the same file name in a second region is refused (409, both regions
    # named), never re-pointed; the first region's record keeps its path.
    twin = f"twin-{uuid.uuid4().hex[:12]}"
    for region in ("north", "south"):
        (world.settings.region_root(region) / "twins").mkdir(parents=True, exist_ok=True)
        (world.settings.region_root(region) / "twins" / f"{twin}.xml").write_bytes(b"<x/>")
    with httpx.Client(timeout=30) as http:
        first = http.post(f"{world.ingest}/api/v1/jobs", headers=world.auth,
                          json={"source": {"region": "north", "pattern": f"twins/{twin}.xml"}})
        assert first.status_code == 202, first.text
        second = http.post(f"{world.ingest}/api/v1/jobs", headers=world.auth,
                           json={"source": {"region": "south", "pattern": f"twins/{twin}.xml"}})
        assert second.status_code == 409 and "is in region north, not south" in _reason(second), second.text
    assert [tuple(r) for r in world.db("SELECT region, remote_path FROM fiscal_records WHERE record_id = $1",
                                        twin)] == [("north", f"twins/{twin}.xml")]
    world.assert_alive()
