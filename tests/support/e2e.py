"""Helpers of the end-to-end modules: PostgreSQL queries, the archive bucket's keys, job waits, and
the environment that lets the services trust the demo PKI's documents."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx

from shared.cli.api_client import bearer
from shared.settings import Settings
from tests.support.stacks import archive_keys, db  # noqa: F401  (db: the e2e modules import it from here)
from tests.support.wait import wait_for
from tooling.issuers.pki import DemoPKI


def s3_keys(settings: Settings) -> set[str]:
    """Every archive object's key (claim checks under staging/ are not archives)."""
    return set(archive_keys(settings))


def wait_jobs(settings: Settings, jobs: list[str], timeout: float = 600) -> None:
    api = f"http://127.0.0.1:{settings.ingest_port}"
    read = bearer(settings)
    wait_for(lambda: [httpx.get(f"{api}/api/v1/jobs/{j}", headers=read, timeout=30).json() for j in jobs],
             lambda states: all(s["status"] == "completed" for s in states), "jobs completed", timeout, every=1)


def demo_trust(pki: DemoPKI, stamps: Path) -> dict[str, str]:
    """Service environment trusting the demo CA and its PAC (stamp certificates copied to ``stamps``)."""
    for cert in pki.stamp_certs_dir.iterdir():
        shutil.copy(cert, stamps / cert.name)
    return {"FISCALFLOW_TRUST_CA": f"demo={pki.ca_cert}", "FISCALFLOW_STAMP_CERTS": str(stamps)}
