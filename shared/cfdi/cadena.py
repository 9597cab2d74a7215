"""Cadena original of a CFDI 4.0 (SAT's XSLT) and of a TimbreFiscalDigital 1.1.

The XSLT is loaded with ``etree.parse(path)`` so its ~35 ``xsl:include``s resolve against
the local files; the resolver refuses the network.  One compiled transform per thread:
libxslt transforms are not safe to share between threads.
"""

from __future__ import annotations

import threading

from lxml import etree

from shared.cfdi.sat_files import cadena_xslt

_local = threading.local()


def _transform() -> etree.XSLT:
    xslt = getattr(_local, "xslt", None)
    if xslt is None:
        parser = etree.XMLParser(no_network=True, resolve_entities=False)
        doc = etree.parse(str(cadena_xslt()), parser)
        # Reading the included stylesheets is needed at compile time only; never the network.
        access = etree.XSLTAccessControl(read_file=True, read_network=False, write_file=False,
                                         create_dir=False, write_network=False)
        xslt = etree.XSLT(doc, access_control=access)
        _local.xslt = xslt
    return xslt


def cadena_original(doc: etree._Element | etree._ElementTree) -> str:
    """SAT's cadena original of a parsed ``cfdi:Comprobante`` (Addenda and TFD are ignored by the XSLT)."""
    result = _transform()(doc)
    return str(result)


def tfd_cadena(uuid: str, fecha_timbrado: str, rfc_prov_certif: str, sello_cfd: str,
               no_certificado_sat: str, leyenda: str | None = None) -> str:
    """Cadena of a TFD 1.1, as ``cadenaoriginal_TFD_1_1.xslt`` builds it."""
    parts = ["1.1", uuid, fecha_timbrado, rfc_prov_certif]
    if leyenda:
        parts.append(leyenda)
    parts += [sello_cfd, no_certificado_sat]
    return "||" + "|".join(" ".join(p.split()) for p in parts) + "||"
