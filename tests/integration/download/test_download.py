"""The download stage on the real sshd regions, broker, PostgreSQL and S3."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncssh
import pytest

from services.download.fetch import fetch
from shared.db.migrate import connect_pool
from shared.db.records import Registration, lookup, register
from shared.domain.messages import DocumentRef, IngestRequest
from shared.runtime import PermanentError, TransientError
from shared.runtime import headers as H
from shared.s3 import S3Store
from shared.settings import Settings
from shared.sftp.pool import RegionPool
from shared.topics import DLQ, Stage
from tests.support.pipeline import Pipeline, headers_of, registrations, write_batch
from tooling.issuers.defects import Defect
from tooling.stack import LocalStack

pytestmark = pytest.mark.integration


async def _register(settings: Settings, rows: list[Registration]) -> None:
    pool = await connect_pool(settings.pg_dsn.get_secret_value())
    async with pool.acquire() as conn:
        await register(conn, rows)
    await pool.close()


def _ingest(ids: list[str]) -> list[tuple[str, bytes, dict[str, str]]]:
    return [(rid, IngestRequest(record_id=rid).encode(), {}) for rid in ids]


def test_a_region_down_for_30_s_waits_while_the_others_finish_and_nothing_dead_letters(
        stack_settings: Settings) -> None:
    per_region = 100
    batches = {r: write_batch(stack_settings, r, per_region)[1] for r in ("north", "central", "south")}
    ids = {r: [row.record_id for row in rows] for r, rows in batches.items()}
    every = [i for rows in ids.values() for i in rows]
    stack = LocalStack(stack_settings)

    async def scenario() -> None:
        await _register(stack_settings, [reg for rows in batches.values() for reg in registrations(rows)])
        async with Pipeline(stack_settings, (Stage.INGEST, Stage.DOWNLOAD)) as pipe:
            # Central's first records go through, so its pool holds live connections when sshd stops.
            half = per_region // 2
            pipe.produce(Stage.INGEST, _ingest(ids["central"][:half]))
            assert len(await pipe.read(Stage.VALIDATE, ids["central"][:half])) == half
            await asyncio.to_thread(stack.stop, "sftp-central")
            stopped = time.monotonic()
            try:
                pipe.produce(Stage.INGEST, _ingest([i for i in every if i not in ids["central"][:half]]))
                others = ids["north"] + ids["south"]
                assert len(await pipe.read(Stage.VALIDATE, others, within_s=25)) == len(others)
                assert time.monotonic() - stopped < 30  # the other regions did not wait for central
                early = await pipe.read(Stage.VALIDATE, ids["central"][half:], within_s=1)
                assert early == {}
                await asyncio.sleep(max(0.0, 30 - (time.monotonic() - stopped)))
            finally:
                await asyncio.to_thread(stack.start, "sftp-central")
            out = await pipe.read(Stage.VALIDATE, every, within_s=90)
            assert set(out) == set(every)
            dead = await pipe.read(DLQ, every, within_s=2)
            assert dead == {}
        pool = await connect_pool(stack_settings.pg_dsn.get_secret_value())
        rows = await lookup(pool, every)
        assert {r.status.value for r in rows.values()} == {"downloaded"}
        await pool.close()

    asyncio.run(scenario())


def test_bad_files_dead_letter_with_their_reason_and_the_record_is_rejected(stack_settings: Settings) -> None:
    _, rows = write_batch(stack_settings, "south", 2, defects=[Defect.CHECKSUM_MISMATCH, Defect.FILE_NOT_FOUND])
    good = [r.record_id for r in rows[:2]]
    mismatch, missing = rows[2].record_id, rows[3].record_id
    outside = f"{mismatch}-escape"
    expected = {mismatch: "CHECKSUM_MISMATCH", missing: "FILE_NOT_FOUND", outside: "PATH_OUTSIDE_ROOT"}
    # A document whose message would not fit the message limit travels as an S3 claim check: a
    # 4 KB limit makes every one of them "large".
    settings = stack_settings.model_copy(update={"message_max_bytes": 4096})

    async def scenario() -> None:
        await _register(settings, [*registrations(rows), Registration(outside, "south", "../../etc/passwd")])
        async with Pipeline(settings, (Stage.INGEST, Stage.DOWNLOAD)) as pipe:
            pipe.produce(Stage.INGEST, _ingest([*good, *expected]))
            dead = await pipe.read(DLQ, expected)
            out = await pipe.read(Stage.VALIDATE, good)
        assert {k: headers_of(m)[H.REASON] for k, m in dead.items()} == expected
        assert {headers_of(m)[H.STAGE] for m in dead.values()} == {"download"}
        pool = await connect_pool(settings.pg_dsn.get_secret_value())
        found = await lookup(pool, list(expected))
        assert {k: r.status.value for k, r in found.items()} == dict.fromkeys(expected, "rejected")
        reasons = await pool.fetch("SELECT record_id, reason FROM fiscal_records WHERE record_id = ANY($1)",
                                   list(expected))
        assert {r["record_id"]: r["reason"] for r in reasons} == expected
        await pool.close()
        s3 = S3Store(settings)
        try:
            for rid in good:
                ref = DocumentRef.decode(out[rid].value() or b"")
                assert ref.xml is None and ref.claim_key == f"staging/{rid}"
                data = await s3.get(ref.claim_key)
                src = settings.region_root("south") / ref.path
                assert data == src.read_bytes() and len(data) == ref.size
        finally:
            await s3.close()

    asyncio.run(scenario())


def test_a_changed_host_key_is_refused(stack_settings: Settings, tmp_path: Path) -> None:
    _, rows = write_batch(stack_settings, "north", 1)
    host, port = stack_settings.regions()["north"]
    impostor = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().split()
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[{host}]:{port} {impostor[0]} {impostor[1]}\n")

    def pool(known_hosts: Path) -> RegionPool:
        return RegionPool("north", host, port, stack_settings.sftp_user, stack_settings.sftp_key_path(),
                          known_hosts, 2, 2)

    async def scenario() -> None:
        refused = pool(wrong)
        with pytest.raises(TransientError, match="host key") as err:
            await fetch(refused, rows[0].path, 1 << 20)
        assert err.value.downstream == "sftp:north"
        assert refused.size == 0
        trusted = pool(stack_settings.known_hosts_path())
        got = await fetch(trusted, rows[0].path, 1 << 20)
        assert got.sha256 == rows[0].sha256
        await refused.close()
        await trusted.close()

    asyncio.run(scenario())


def test_the_pool_shares_connections_and_caps_the_document_size(stack_settings: Settings) -> None:
    _, rows = write_batch(stack_settings, "central", 30)
    host, port = stack_settings.regions()["central"]
    pool = RegionPool("central", host, port, stack_settings.sftp_user, stack_settings.sftp_key_path(),
                      stack_settings.known_hosts_path(), 3, 4)

    async def scenario() -> None:
        got = await asyncio.gather(*(fetch(pool, r.path, 1 << 20) for r in rows))
        assert [g.sha256 for g in got] == [r.sha256 for r in rows]
        assert 1 <= pool.size <= 3  # lazily opened, never more than the limit
        with pytest.raises(PermanentError) as err:
            await fetch(pool, rows[0].path, 1024)
        assert err.value.reason == "DOCUMENT_TOO_LARGE"
        await pool.close()

    asyncio.run(scenario())


def test_files_larger_than_one_read_arrive_whole_whatever_the_manifest_says(stack_settings: Settings) -> None:
    """Reads end at EOF, or at the manifest's size; a wrong size never truncates a document."""
    import hashlib
    import os

    root = stack_settings.region_root("south")
    (root / "big").mkdir(parents=True, exist_ok=True)
    sizes = {"one-byte.xml": 1, "exactly-a-read.xml": 256 * 1024, "three-reads.xml": 700_001}
    digests = {}
    for name, size in sizes.items():
        data = os.urandom(size)
        (root / "big" / name).write_bytes(data)
        digests[name] = hashlib.sha256(data).hexdigest()
    (root / "big" / "empty.xml").write_bytes(b"")
    host, port = stack_settings.regions()["south"]
    pool = RegionPool("south", host, port, stack_settings.sftp_user, stack_settings.sftp_key_path(),
                      stack_settings.known_hosts_path(), 2, 2)

    async def scenario() -> None:
        for name, size in sizes.items():
            for announced in (None, size, size - 1, size + 5):  # unknown, right, too small, too big
                got = await fetch(pool, f"big/{name}", 1 << 20, announced)
                assert (got.size, got.sha256) == (size, digests[name]), (name, announced)
        assert (await fetch(pool, "big/empty.xml", 1 << 20, None)).size == 0
        with pytest.raises(PermanentError) as err:  # over the cap by the server's FSTAT, before reading
            await fetch(pool, "big/three-reads.xml", 300_000, None)
        assert err.value.reason == "DOCUMENT_TOO_LARGE"
        assert err.value.details == {"size": 700_001, "limit": 300_000} and "700001 bytes" in err.value.message
        with pytest.raises(PermanentError) as err:  # over the cap by the manifest: not even opened
            await fetch(pool, "big/missing.xml", 300_000, 700_001)
        assert err.value.reason == "DOCUMENT_TOO_LARGE" and err.value.details["size"] == 700_001
        await pool.close()

    asyncio.run(scenario())


def test_concurrent_downloads_hold_no_more_bytes_than_the_budget_and_all_arrive_whole(
        stack_settings: Settings) -> None:
    """A replica's byte budget bounds the documents it holds, not just how many messages: twelve
    600 KB files fetched at once, half of them bare record ids (size by FSTAT), on a 2 MB budget."""
    import hashlib
    import os

    from shared.runtime.budget import ByteBudget
    from shared.runtime.inflight import InFlight
    from shared.runtime.message import Message

    root = stack_settings.region_root("north")
    (root / "budget").mkdir(parents=True, exist_ok=True)
    size, count, limit = 600_000, 12, 2_000_000
    digests = {}
    for i in range(count):
        data = os.urandom(size)
        (root / "budget" / f"{i}.xml").write_bytes(data)
        digests[i] = hashlib.sha256(data).hexdigest()
    host, port = stack_settings.regions()["north"]
    pool = RegionPool("north", host, port, stack_settings.sftp_user, stack_settings.sftp_key_path(),
                      stack_settings.known_hosts_path(), 4, 4)
    budget = ByteBudget("download", limit)
    peak = 0
    take = budget._take

    def watched(n: int) -> None:
        nonlocal peak
        take(n)
        peak = max(peak, budget.used)

    budget._take = watched  # type: ignore[method-assign]
    got: dict[int, str] = {}

    async def work(msg: Message) -> bool:
        i = msg.offset
        fetched = await fetch(pool, f"budget/{i}.xml", 1 << 20, size if i % 2 else None)
        got[i] = fetched.sha256
        await asyncio.sleep(0.05)  # the document stays held while the stage hands it on
        return True

    async def scenario() -> None:
        inflight = InFlight("download", count, work, budget)
        for i in range(count):
            await inflight.admit(Message("t", 0, i, b"k", b"{}", {}, 0))
        await asyncio.wait_for(asyncio.gather(*inflight.tasks.values()), 60)
        await pool.close()

    asyncio.run(scenario())
    assert got == digests
    assert size <= peak <= limit  # each file reserved before it was read; never more than the budget at once
    assert budget.used == 0
