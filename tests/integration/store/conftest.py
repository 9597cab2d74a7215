"""Fixtures for store tests: a demo PKI and generator, a running store stage per test namespace."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.issuers.generator import InvoiceGenerator
from shared.issuers.pki import DemoPKI


@pytest.fixture(scope="session")
def generator(tmp_path_factory: pytest.TempPathFactory) -> InvoiceGenerator:
    pki = DemoPKI.ensure(Path(tmp_path_factory.mktemp("pki")), issuers=4)
    return InvoiceGenerator(pki, seed=11)
