"""L0: turn untrusted bytes into a parsed ``cfdi:Comprobante`` 4.0, or say why not — never raise.

A CFDI never has a DTD, so any ``<!DOCTYPE``/``<!ENTITY`` is refused before parsing (XXE and
entity bombs never reach libxml2's expansion code); the parser also resolves no entities, loads no
DTD and never touches the network.  Anexo 20 requires UTF-8: a UTF-8 BOM and CRLF line ends are
fine, any other declared or sniffed encoding is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lxml import etree

from services.validate.cfdi.rules import RuleId

CFDI_NS = "http://www.sat.gob.mx/cfd/4"
COMPROBANTE = f"{{{CFDI_NS}}}Comprobante"
_DECLARED_ENCODING = re.compile(rb"""^<\?xml[^>]*?\bencoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")
_UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_32_BOMS = (b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")


@dataclass(frozen=True, slots=True)
class Parsed:
    root: etree._Element | None
    failure: RuleId | None


def new_parser() -> etree.XMLParser:
    # One parser per validator (lxml parsers are not meant to be shared across threads).
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
                           huge_tree=False, collect_ids=False)


def parse(data: bytes, parser: etree.XMLParser, max_bytes: int) -> Parsed:
    if len(data) > max_bytes:
        return Parsed(None, RuleId.XML_TOO_LARGE)
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        return Parsed(None, RuleId.XML_DOCTYPE_FORBIDDEN)
    body = data[3:] if data.startswith(_UTF8_BOM) else data
    if body.startswith(_UTF16_32_BOMS) or body.startswith(b"\x00"):
        return Parsed(None, RuleId.XML_ENCODING)
    declared = _DECLARED_ENCODING.match(body.lstrip())
    if declared is not None and declared.group(1).lower().replace(b"_", b"-") not in (b"utf-8", b"utf8"):
        return Parsed(None, RuleId.XML_ENCODING)
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return Parsed(None, RuleId.XML_ENCODING)
    try:
        root = etree.fromstring(body, parser)
    except (etree.XMLSyntaxError, ValueError):
        return Parsed(None, RuleId.XML_MALFORMED)
    if root is None:
        return Parsed(None, RuleId.XML_MALFORMED)
    tree = root.getroottree()
    if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:  # belt and braces
        return Parsed(None, RuleId.XML_DOCTYPE_FORBIDDEN)
    version = root.get("Version")
    if root.tag != COMPROBANTE or version is None or version.strip() != "4.0":
        return Parsed(root, RuleId.NOT_CFDI40)
    return Parsed(root, None)
