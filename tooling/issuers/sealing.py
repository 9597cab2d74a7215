"""Seal (issuer CSD) and stamp (demo PAC's TimbreFiscalDigital 1.1) a comprobante tree.

The cadena comes from SAT's own XSLT (shared/cfdi/cadena.py), so whatever a test mutates in the
tree is sealed exactly as a validator will recompute it. Re-stamping is deterministic: without
an explicit UUID it reuses the tree's previous TFD UUID, else derives one from the cadena.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime, timedelta

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from lxml import etree

from shared.cfdi.cadena import cadena_original, tfd_cadena
from tooling.issuers.pki import DemoPKI, Issuer
from tooling.issuers.xmltree import DATE_FORMAT, SCHEMA_LOCATION, TFD_LOCATION, TFD_NS, XSI_NS, cfdi

TFD_TAG = f"{{{TFD_NS}}}TimbreFiscalDigital"
XML_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'


def sign(key: rsa.RSAPrivateKey, text: str) -> str:
    """Base64 RSA-SHA256 PKCS#1 v1.5 over the UTF-8 text, as SAT's Sello and SelloSAT."""
    return base64.b64encode(key.sign(text.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())).decode("ascii")


def _uuid_from_digest(digest: bytes) -> str:
    h = bytearray(digest[:16])
    h[6] = (h[6] & 0x0F) | 0x40
    h[8] = (h[8] & 0x3F) | 0x80
    x = h.hex().upper()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


class Sealer:
    def __init__(self, pki: DemoPKI) -> None:
        self.pki = pki
        self._by_number = {i.no_certificado: i for i in pki.issuers}
        self._by_rfc = {i.rfc: i for i in pki.issuers}

    def issuer_for(self, root: etree._Element) -> Issuer:
        """The issuer whose key seals ``root``: by NoCertificado, else by Emisor/@Rfc."""
        issuer = self._by_number.get(root.get("NoCertificado", ""))
        if issuer is None:
            emisor = root.find(cfdi("Emisor"))
            issuer = self._by_rfc.get(emisor.get("Rfc", "") if emisor is not None else "")
        if issuer is None:
            raise LookupError("no demo issuer matches the document's NoCertificado or Emisor/@Rfc")
        return issuer

    def seal(self, root: etree._Element) -> str:
        """Set NoCertificado/Certificado (when missing) and Sello in place; return the Sello."""
        issuer = self.issuer_for(root)
        if root.get("NoCertificado") != issuer.no_certificado:
            root.set("NoCertificado", issuer.no_certificado)
            root.set("Certificado", issuer.cert_b64)
        root.attrib.pop("Sello", None)
        sello = sign(issuer.key, cadena_original(root))
        # Sello goes right after Fecha, where SAT's samples have it (attribute order is not sealed).
        attrs = list(root.attrib.items())
        root.attrib.clear()
        for name, value in attrs:
            root.set(name, value)
            if name == "Fecha":
                root.set("Sello", sello)
        if "Sello" not in root.attrib:
            root.set("Sello", sello)
        return sello

    def stamp(self, root: etree._Element, uuid: str | None = None, fecha_timbrado: str | None = None) -> None:
        """Replace any TFD by a fresh one signed by the demo PAC."""
        sello = root.get("Sello")
        if not sello:
            raise ValueError("seal the document before stamping it")
        complemento = root.find(cfdi("Complemento"))
        if complemento is None:
            complemento = etree.SubElement(root, cfdi("Complemento"))
            addenda = root.find(cfdi("Addenda"))
            if addenda is not None:  # Complemento precedes Addenda in the schema
                addenda.addprevious(complemento)
        for old in complemento.findall(TFD_TAG):
            uuid = uuid or old.get("UUID")
            complemento.remove(old)
        digest = hashlib.sha256(sello.encode("ascii")).digest()
        uuid = uuid or _uuid_from_digest(digest)
        if fecha_timbrado is None:
            # A PAC stamps seconds to minutes after the issuer seals (TFD_FECHA_RANGE allows up to 72 h).
            fecha = datetime.strptime(root.get("Fecha", ""), DATE_FORMAT)
            fecha_timbrado = (fecha + timedelta(seconds=5 + digest[16] * 2)).strftime(DATE_FORMAT)
        pac = self.pki.stamping
        sello_sat = sign(pac.key, tfd_cadena(uuid, fecha_timbrado, pac.rfc, sello, pac.no_certificado))
        tfd = etree.SubElement(complemento, TFD_TAG, nsmap={"tfd": TFD_NS, "xsi": XSI_NS})
        for name, value in ((SCHEMA_LOCATION, TFD_LOCATION), ("Version", "1.1"), ("UUID", uuid),
                            ("FechaTimbrado", fecha_timbrado), ("RfcProvCertif", pac.rfc), ("SelloCFD", sello),
                            ("NoCertificadoSAT", pac.no_certificado), ("SelloSAT", sello_sat)):
            tfd.set(name, value)

    def seal_and_stamp(self, root: etree._Element, uuid: str | None = None,
                       fecha_timbrado: str | None = None) -> bytes:
        """Seal and stamp ``root`` in place and serialize it (UTF-8, with XML declaration)."""
        self.seal(root)
        self.stamp(root, uuid, fecha_timbrado)
        return XML_DECLARATION + bytes(etree.tostring(root, encoding="UTF-8"))
