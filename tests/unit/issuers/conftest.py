"""One small demo PKI for the whole issuers suite: RSA key generation is the slow part."""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree

from shared.cfdi.sat_files import cfdv40_xsd, sat_site, tfd_xsd
from tooling.issuers.generator import InvoiceGenerator
from tooling.issuers.pki import DemoPKI


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DemoPKI:
    return DemoPKI.create(tmp_path_factory.mktemp("pki"), issuers=8, seed=7)


@pytest.fixture(scope="session")
def generator(pki: DemoPKI) -> InvoiceGenerator:
    return InvoiceGenerator(pki, seed=11)


@pytest.fixture(scope="session")
def stock_schema() -> etree.XMLSchema:
    """SAT's stock schemas (cfdv40 + catalogs, TFD 1.1, Pagos 2.0): the complement is validated strictly."""
    pagos = sat_site() / "cfd" / "Pagos" / "Pagos20.xsd"
    imports = "".join(
        f'<xs:import namespace="{ns}" schemaLocation="{Path(path).as_uri()}"/>'
        for ns, path in (("http://www.sat.gob.mx/cfd/4", cfdv40_xsd()),
                         ("http://www.sat.gob.mx/TimbreFiscalDigital", tfd_xsd()),
                         ("http://www.sat.gob.mx/Pagos20", pagos)))
    wrapper = f'<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">{imports}</xs:schema>'
    return etree.XMLSchema(etree.fromstring(wrapper.encode()))
