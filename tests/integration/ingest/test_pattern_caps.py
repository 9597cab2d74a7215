"""A pattern job's caps against a real region (the test stack's sshd): each refused with a reason
the API answers as a 422 (services/ingest/api.py maps PatternError and TooManyFiles)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from services.ingest import sources
from services.ingest.sources import PatternError, TooManyFiles, check_pattern, registrations
from shared.settings import Settings
from shared.sftp.pool import RegionPool, build_pools

pytestmark = pytest.mark.integration


@pytest.fixture
def north(stack_settings: Settings) -> tuple[RegionPool, str]:
    """The north pool and a fresh batch directory with 12 files (and their manifest)."""
    batch = f"caps-{uuid.uuid4().hex[:8]}"
    root = stack_settings.region_root("north") / batch
    (root / "deep").mkdir(parents=True)
    rows = ["path,sha256,size"]
    for i in range(12):
        (root / f"r{i}.xml").write_bytes(b"<x/>")
        rows.append(f"{batch}/r{i}.xml,{'ab' * 32},4")
    (root / "MANIFEST.csv").write_text("\n".join(rows) + "\n")
    return build_pools(stack_settings)["north"], batch


def _run(pool: RegionPool, coro: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    async def go() -> Any:
        try:
            return await coro()
        finally:
            await pool.close()
    return asyncio.run(go())


def test_a_pattern_within_the_caps_registers_its_files_with_their_manifest(north: tuple[RegionPool, str]) -> None:
    pool, batch = north
    rows = _run(pool, lambda: registrations(pool, f"{batch}/*.xml", 100))
    assert len(rows) == 12 and all(r.expected_sha256 == "ab" * 32 for r in rows)


def test_too_many_segments_is_refused_before_any_listing() -> None:
    with pytest.raises(PatternError, match="9 path segments; at most 8"):
        check_pattern("/".join(["d"] * 8 + ["*.xml"]))


def test_a_listing_that_scans_too_many_entries_is_refused(north: tuple[RegionPool, str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    pool, batch = north
    monkeypatch.setattr(sources, "MAX_SCANNED", 10)  # 14 entries: 12 files, the manifest, a directory
    with pytest.raises(TooManyFiles, match="scans more than 10 directory entries"):
        _run(pool, lambda: registrations(pool, f"{batch}/nomatch-*.xml", 100))


def test_a_manifest_over_the_cap_is_refused(north: tuple[RegionPool, str], monkeypatch: pytest.MonkeyPatch) -> None:
    pool, batch = north
    monkeypatch.setattr(sources, "MAX_MANIFEST_BYTES", 256)  # the manifest has ~1 KB
    with pytest.raises(TooManyFiles, match=f"north:{batch}/MANIFEST.csv is larger than"):
        _run(pool, lambda: registrations(pool, f"{batch}/*.xml", 100))


def test_a_listing_over_its_time_budget_is_refused(north: tuple[RegionPool, str]) -> None:
    pool, batch = north
    with pytest.raises(TooManyFiles, match="took longer than 0 s"):
        _run(pool, lambda: registrations(pool, f"{batch}/*.xml", 100, timeout_s=0.001))
