"""Fixtures for store tests: a demo PKI and generator, a running store stage per test namespace."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tooling.issuers.generator import InvoiceGenerator
from tooling.issuers.pki import DemoPKI


@pytest.fixture(scope="session")
def generator(tmp_path_factory: pytest.TempPathFactory) -> InvoiceGenerator:
    # A fresh seed per session: the test database outlives sessions and TFD UUIDs derive from the seed.
    pki = DemoPKI.ensure(Path(tmp_path_factory.mktemp("pki")), issuers=4)
    return InvoiceGenerator(pki, seed=random.randrange(1 << 30))
