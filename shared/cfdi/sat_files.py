"""Where SAT's official files live: inside the installed satcfdi package, never fetched."""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from pathlib import Path


@cache
def satcfdi_root() -> Path:
    return Path(str(files("satcfdi")))


@cache
def sat_site() -> Path:
    """Local mirror of ``http://www.sat.gob.mx/sitio_internet`` shipped by satcfdi."""
    return satcfdi_root() / "transform" / "schemas" / "www.sat.gob.mx" / "sitio_internet"


def cfdv40_xsd() -> Path:
    return sat_site() / "cfd" / "4" / "cfdv40.xsd"


def cadena_xslt() -> Path:
    return sat_site() / "cfd" / "4" / "cadenaoriginal_4_0" / "cadenaoriginal_4_0.xslt"


def tfd_xsd() -> Path:
    return sat_site() / "cfd" / "TimbreFiscalDigital" / "TimbreFiscalDigitalv11.xsd"


def prod_ca_zip() -> Path:
    """SAT's production CA certificates (``CertsProd.zip``)."""
    return satcfdi_root() / "transform" / "CertsProd.zip"
