"""Seed 000's ``source: s3``: a job over the objects under a prefix of the S3 source bucket, on the
stack's real SeaweedFS.  The ingest API lists and registers them (region ``s3``), the download
stage reads them from the bucket and verifies the checksums a MANIFEST.csv there gives."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import uuid

import httpx
import pytest

from shared.domain.messages import DocumentRef
from shared.domain.records import S3_REGION
from shared.runtime import headers as H
from shared.settings import Settings
from shared.topics import DLQ, Stage
from tests.support.pipeline import Pipeline, headers_of
from tooling.issuers.generator import InvoiceGenerator
from tooling.issuers.pki import DemoPKI
from tooling.stack.component import StackContext
from tooling.stack.s3 import S3Identities, s3_client

pytestmark = pytest.mark.integration


def _auth(settings: Settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {settings.api_token.get_secret_value()}"}


def test_a_source_s3_job_downloads_the_prefixs_objects_and_checks_their_manifest(stack_settings: Settings) -> None:
    settings = stack_settings
    admin = s3_client(settings.s3_endpoint, settings.s3_region, S3Identities.load(StackContext(settings)).admin)
    prefix = f"inbox-{uuid.uuid4().hex[:8]}"
    gen = InvoiceGenerator(DemoPKI.ensure(settings.pki_dir()), seed=int(prefix[-6:], 16))
    docs = {f"s3doc-{prefix}-{i}": gen.generate(i, defect=None).xml for i in range(3)}
    for rid, xml in docs.items():
        admin.put_object(Bucket=settings.s3_source_bucket, Key=f"{prefix}/day-1/{rid}.xml", Body=xml)
    # Not matched: another directory, and a non-XML object in the matched one.
    admin.put_object(Bucket=settings.s3_source_bucket, Key=f"{prefix}/day-2/other.xml", Body=b"<x/>")
    admin.put_object(Bucket=settings.s3_source_bucket, Key=f"{prefix}/day-1/notes.txt", Body=b"hi")
    lying = f"s3doc-{prefix}-2"
    manifest = io.StringIO()
    w = csv.writer(manifest)
    w.writerow(["path", "sha256", "size"])
    for rid, xml in docs.items():
        digest = hashlib.sha256(xml + (b"\n" if rid == lying else b"")).hexdigest()
        w.writerow([f"{prefix}/day-1/{rid}.xml", digest, len(xml)])
    admin.put_object(Bucket=settings.s3_source_bucket, Key=f"{prefix}/day-1/MANIFEST.csv",
                     Body=manifest.getvalue().encode())
    url = f"http://127.0.0.1:{settings.ingest_port}/api/v1/fiscal/process"

    async def scenario() -> None:
        async with Pipeline(settings, (Stage.INGEST, Stage.DOWNLOAD)) as pipe, httpx.AsyncClient() as http:
            resp = await http.post(url, headers=_auth(settings), timeout=60,
                                   json={"source": "s3", "file_pattern": f"{prefix}/day-*/s3doc-*.xml"})
            assert resp.status_code == 202, resp.text
            assert resp.json()["record_count"] == 3
            job = (await http.get(f"http://127.0.0.1:{settings.ingest_port}{resp.headers['location']}",
                                  headers=_auth(settings))).json()
            assert job["source"] == {"s3": f"s3://{settings.s3_source_bucket}/",
                                     "pattern": f"{prefix}/day-*/s3doc-*.xml"}
            good = [r for r in docs if r != lying]
            out = await pipe.read(Stage.VALIDATE, good)
            assert set(out) == set(good)
            for rid in good:
                ref = DocumentRef.decode(out[rid].value())
                assert ref.region == S3_REGION and ref.path == f"{prefix}/day-1/{rid}.xml"
                assert ref.sha256 == hashlib.sha256(docs[rid]).hexdigest()
            dead = await pipe.read(DLQ, [lying])
            assert headers_of(dead[lying])[H.REASON] == "CHECKSUM_MISMATCH"

            nothing = await http.post(url, headers=_auth(settings), json={"source": "s3",
                                                                         "file_pattern": f"{prefix}/none/*.xml"})
            assert nothing.status_code == 422 and "no object of s3://" in nothing.text
            escape = await http.post(url, headers=_auth(settings), json={"source": "s3", "file_pattern": "../*.xml"})
            assert escape.status_code == 422 and "'..'" in escape.text

    asyncio.run(scenario())


def test_no_sftp_region_may_be_named_like_the_s3_source() -> None:
    with pytest.raises(ValueError, match="region of S3-sourced records"):
        Settings(sftp_regions="north=127.0.0.1:2201,s3=127.0.0.1:2202")
