"""Trust is configuration: CA sources (file, directory, zip), their labels, stamping certificates."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest
from cryptography import x509

from services.validate.cfdi import CfdiValidator, StampCertStore, TrustStore, Verdict
from tooling.issuers.generator import InvoiceGenerator
from tooling.issuers.pki import DemoPKI


def test_production_ca_is_trusted_by_default() -> None:
    assert len(TrustStore.default()) >= 5
    assert len(TrustStore.default(include_production=False)) == 0


@pytest.mark.parametrize("shape", ["file", "pem", "dir", "zip"])
def test_ca_sources(shape: str, pki: DemoPKI, generator: InvoiceGenerator, tmp_path: Path) -> None:
    if shape == "file":
        source = pki.ca_cert
    elif shape == "pem":
        from cryptography.hazmat.primitives.serialization import Encoding

        source = tmp_path / "ca.pem"
        source.write_bytes(x509.load_der_x509_certificate(pki.ca_cert.read_bytes()).public_bytes(Encoding.PEM))
    elif shape == "dir":
        source = tmp_path / "cas"
        source.mkdir()
        shutil.copy(pki.ca_cert, source / "demo.cer")
        (source / "README").write_text("not a certificate")
    else:
        source = tmp_path / "cas.zip"
        with zipfile.ZipFile(source, "w") as zf:
            zf.write(pki.ca_cert, "demo.cer")
    validator = CfdiValidator(TrustStore.default([source], include_production=False),
                              StampCertStore.from_directory(pki.stamp_certs_dir))
    result = validator.validate(generator.generate(0, defect=None).xml)
    assert result.verdict is Verdict.VALID
    assert result.trust == "custom"


def test_labels(pki: DemoPKI, shared_cfdi: Path) -> None:
    store = TrustStore.default([f"lab={pki.ca_cert}", shared_cfdi / "test-certs" / "ca" / "SATCertsPruebas.zip"])
    labels = {a.label for anchors in store._by_subject.values() for a in anchors}
    assert labels == {"sat-prod", "sat-test", "lab"}


def test_missing_source_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        TrustStore.default([tmp_path / "nope.zip"])
    with pytest.raises(NotADirectoryError):
        StampCertStore.from_directory(tmp_path / "nope")


def test_stamp_certs_by_number(shared_cfdi: Path) -> None:
    stamps = StampCertStore.from_directory(shared_cfdi / "test-certs" / "tfd")
    assert stamps.get("30001000000500003456") is not None
    assert stamps.get("00001000000708361114") is not None
    assert stamps.get("99999999999999999999") is None
