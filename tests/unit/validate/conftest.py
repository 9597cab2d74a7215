"""Fixtures of the validator suite: SAT's public test material (read in place, never copied) and
the project's own demo PKI + generated invoices (tooling/issuers), re-sealed after each mutation."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from lxml import etree

from services.validate.cfdi import CfdiValidator, StampCertStore, TrustStore, ValidationResult
from tooling.issuers.generator import InvoiceGenerator
from tooling.issuers.pki import DemoPKI

SHARED_CFDI = (Path(__file__).resolve().parents[3] / ".." / "shared" / "cfdi").resolve()


@pytest.fixture(scope="session", autouse=True)
def _private_schema_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The prepared fast schema these tests cache goes to a temporary directory, not ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
        yield


@pytest.fixture(scope="session")
def shared_cfdi() -> Path:
    if not (SHARED_CFDI / "samples" / "MANIFEST.tsv").is_file():
        pytest.skip(f"shared CFDI test material not found at {SHARED_CFDI}")
    return SHARED_CFDI


@pytest.fixture(scope="session")
def sample_validator(shared_cfdi: Path) -> CfdiValidator:
    """SAT production CA + SAT's test CA trusted, SAT's test stamping certificates known."""
    trust = TrustStore.default([shared_cfdi / "test-certs" / "ca" / "SATCertsPruebas.zip"])
    return CfdiValidator(trust, StampCertStore.from_directory(shared_cfdi / "test-certs" / "tfd"))


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DemoPKI:
    return DemoPKI.create(tmp_path_factory.mktemp("validate-pki"), issuers=6, seed=5)


@pytest.fixture(scope="session")
def generator(pki: DemoPKI) -> InvoiceGenerator:
    return InvoiceGenerator(pki, seed=23)


@pytest.fixture(scope="session")
def demo_trust(pki: DemoPKI) -> TrustStore:
    return TrustStore.default([f"demo={pki.ca_cert}"])


@pytest.fixture(scope="session")
def validator(pki: DemoPKI, demo_trust: TrustStore) -> CfdiValidator:
    return CfdiValidator(demo_trust, StampCertStore.from_directory(pki.stamp_certs_dir))


Predicate = Callable[[etree._Element], bool]


@pytest.fixture(scope="session")
def find_tree(generator: InvoiceGenerator) -> Callable[..., etree._Element]:
    """The first unsigned generated invoice of ``tipo`` for which ``predicate`` holds (a fresh copy)."""
    cache: dict[tuple[str | None, str], int] = {}

    def find(tipo: str | None = None, predicate: Predicate = lambda _r: True, key: str = "") -> etree._Element:
        slot = (tipo, key)
        if slot in cache:
            return generator.build_tree(cache[slot], tipo)
        for index in range(400):
            root = generator.build_tree(index, tipo)
            if predicate(root):
                cache[slot] = index
                return generator.build_tree(index, tipo)
        pytest.skip(f"no generated {tipo or 'any'} invoice matches {key or 'the predicate'}")

    return find


@pytest.fixture(scope="session")
def check(validator: CfdiValidator) -> Callable[[bytes], ValidationResult]:
    return validator.validate


@pytest.fixture(scope="session")
def pki_validator_small(demo_trust: TrustStore) -> CfdiValidator:
    """A validator whose size cap is 1 KiB."""
    return CfdiValidator(demo_trust, max_bytes=1024)
