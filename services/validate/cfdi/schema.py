"""L1: the official CFDI 4.0 schema (satcfdi's local copy of SAT's XSDs), made fast.

libxml2 checks an ``xs:enumeration`` by scanning it linearly; ``catCFDI.xsd`` has ~96 000 postal
codes and ~53 000 product keys, so the stock schema costs ~10 ms per invoice (spec §5).  At load
time we copy the schema documents, strip every enumeration with more than ``BIG_ENUMERATION``
values, keep those values as Python frozensets, and check the attributes typed with them here:
the verdicts are the stock schema's (tests/unit/validate compare both on the corpus), ~100× faster.
That preparation (~0.5 s, mostly libxml2 reading 8 MB of catalogues) is kept on disk between
processes by ``schema_cache``.

Only complements that SAT's cadena XSLT knows are loaded: ``cfdi:Complemento`` is a strict
``xs:any``, so an unknown complement has no declaration and fails here, before its text could
leak into the cadena original.  Schema documents are read from disk only; ``http://`` is refused.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from lxml import etree

from services.validate.cfdi import schema_cache
from services.validate.cfdi.catalogs import Catalog, CatalogUse, CompactValues
from services.validate.cfdi.rules import XSD_ATTRIBUTE_SAT_CODE, RuleId, SatCode, Violation
from services.validate.cfdi.schema_cache import PreparedSchema
from shared.cfdi.sat_files import cadena_xslt, cfdv40_xsd, sat_site, tfd_xsd

XS = "http://www.w3.org/2001/XMLSchema"
CFDI_NS = "http://www.sat.gob.mx/cfd/4"
XSL = "http://www.w3.org/1999/XSL/Transform"
BIG_ENUMERATION = 100

_XS_IMPORTS = (f"{{{XS}}}import", f"{{{XS}}}include", f"{{{XS}}}redefine")
_XSD_MESSAGE = re.compile(r"Element '(?:\{[^}]*\})?([^']+)'(?:, attribute '([^']+)')?")


def complement_xsds() -> list[Path]:
    """The XSD of every complement the cadena XSLT includes (same folder and stem, or cfd/<stem>.xsd)."""
    xslt = etree.parse(str(cadena_xslt()), etree.XMLParser(no_network=True, resolve_entities=False))
    out: list[Path] = []
    for inc in xslt.getroot().iterchildren(f"{{{XSL}}}include"):
        href = inc.get("href") or ""
        path = (cadena_xslt().parent / href).resolve()
        for candidate in (path.with_suffix(".xsd"), sat_site() / "cfd" / f"{path.stem}.xsd"):
            if candidate.exists():
                out.append(candidate)
                break
        # utilerias.xslt (helper templates) is the only include without a schema
    return out


def root_xsds() -> list[Path]:
    return [cfdv40_xsd(), tfd_xsd(), *complement_xsds()]


def _safe_parser() -> etree.XMLParser:
    return etree.XMLParser(no_network=True, resolve_entities=False, load_dtd=False, remove_comments=True)


def _load_closure(roots: Iterable[Path], strip: bool
                  ) -> tuple[dict[Path, etree._ElementTree], dict[tuple[str, str], Catalog], set[Path]]:
    """Every schema document reachable from ``roots`` through import/include, by absolute path.

    With ``strip``, big enumerations are taken out while parsing (streamed one simpleType at a
    time), so the 5 MB catalogue never sits in memory as a whole tree: that keeps the process's
    peak RSS near its steady state.
    """
    docs: dict[Path, etree._ElementTree] = {}
    catalogs: dict[tuple[str, str], Catalog] = {}
    changed: set[Path] = set()
    todo = [p.resolve() for p in roots]
    while todo:
        path = todo.pop()
        if path in docs:
            continue
        tree = _parse_stripping(path, catalogs, changed) if strip else etree.parse(str(path), _safe_parser())
        docs[path] = tree
        for node in tree.getroot():
            if node.tag in _XS_IMPORTS and (loc := node.get("schemaLocation")):
                if "://" in loc:
                    raise ValueError(f"{path}: remote schemaLocation {loc!r}; only local SAT files are used")
                todo.append((path.parent / loc).resolve())
    return docs, catalogs, changed


def _parse_stripping(path: Path, catalogs: dict[tuple[str, str], Catalog], changed: set[Path]) -> etree._ElementTree:
    events = etree.iterparse(str(path), events=("end",), tag=f"{{{XS}}}simpleType", no_network=True,
                             resolve_entities=False, load_dtd=False, remove_comments=True)
    for _event, st in events:
        parent = st.getparent()
        if parent is None or parent.getparent() is not None:
            continue  # only named, top-level types are catalogues
        restriction = st.find(f"{{{XS}}}restriction")
        if restriction is None:
            continue
        # libxml2 reads the values and drops the elements: no Python object per enumeration
        values: list[str] = _ENUMERATION_VALUES(restriction)
        if len(values) <= BIG_ENUMERATION:
            continue
        ws = restriction.find(f"{{{XS}}}whiteSpace")
        base = _qname(restriction, restriction.get("base", ""))
        if base != (XS, "string"):
            raise ValueError(f"{path}: big enumeration {st.get('name')} on {base}; only xs:string is handled")
        if _ENUMERATIONS_BELOW(restriction) != len(values):
            raise ValueError(f"{path}: big enumeration {st.get('name')} with nested or valueless enumerations")
        name = st.get("name", "")
        tns = parent.get("targetNamespace", "")
        catalogs[(tns, name)] = Catalog(name, CompactValues(values),
                                        ws.get("value", "preserve") if ws is not None else "preserve")
        etree.strip_elements(restriction, f"{{{XS}}}enumeration")
        changed.add(path)
    root = events.root
    return etree.ElementTree(root)


_ENUMERATION_VALUES = etree.XPath("xs:enumeration/@value", namespaces={"xs": XS}, smart_strings=False)
_ENUMERATIONS_BELOW = etree.XPath("count(.//xs:enumeration)", namespaces={"xs": XS})


def _qname(node: etree._Element, value: str) -> tuple[str, str]:
    prefix, _, local = value.rpartition(":")
    return (node.nsmap.get(prefix or None) or "", local)


def _attribute_uses(docs: dict[Path, etree._ElementTree], catalogs: dict[tuple[str, str], Catalog]) -> list[CatalogUse]:
    """Attributes typed with a stripped catalog, directly or through a restriction of it."""
    # Named types restricting a catalog inherit its values.
    grew = True
    while grew:
        grew = False
        for tree in docs.values():
            tns = tree.getroot().get("targetNamespace", "")
            for st in tree.getroot().iterchildren(f"{{{XS}}}simpleType"):
                r = st.find(f"{{{XS}}}restriction")
                key = (tns, st.get("name", ""))
                if r is not None and key not in catalogs and _qname(r, r.get("base", "")) in catalogs:
                    catalogs[key] = catalogs[_qname(r, r.get("base", ""))]
                    grew = True
    uses: list[CatalogUse] = []
    for path, tree in docs.items():
        root = tree.getroot()
        tns = root.get("targetNamespace", "")
        qualified = root.get("elementFormDefault") == "qualified"
        for attr in root.iter(f"{{{XS}}}attribute"):
            typ = attr.get("type")
            if typ is None:
                r = attr.find(f"{{{XS}}}simpleType/{{{XS}}}restriction")
                typ = r.get("base") if r is not None else None
                node = r
            else:
                node = attr
            if typ is None or node is None or _qname(node, typ) not in catalogs:
                continue
            owners = [a for a in attr.iterancestors() if a.tag == f"{{{XS}}}element" or
                      (a.tag in (f"{{{XS}}}complexType", f"{{{XS}}}attributeGroup") and a.get("name"))]
            if not owners or owners[0].tag != f"{{{XS}}}element" or any(o.tag != f"{{{XS}}}element" for o in owners):
                raise ValueError(f"{path}: catalog attribute {attr.get('name')} outside an inline element")
            names = [o.get("name", "") for o in reversed(owners)]
            clark = tuple(f"{{{tns}}}{n}" if (i == 0 or qualified) else n for i, n in enumerate(names))
            uses.append(CatalogUse(clark, attr.get("name", ""), catalogs[_qname(node, typ)]))
    return uses


class _LocalSchemas(etree.Resolver):  # type: ignore[misc]  # lxml-stubs absent: Resolver is Any
    """Serves our edited copies of SAT's schema documents; everything else is the file on disk."""

    def __init__(self, edited: dict[Path, bytes]) -> None:
        super().__init__()
        self._edited = edited

    def resolve(self, system_url: str, public_id: str, context: object) -> object:
        if "://" in system_url and not system_url.startswith("file://"):
            raise ValueError(f"refusing to fetch {system_url}")
        path = Path(system_url.removeprefix("file://")).resolve()
        body = self._edited.get(path)
        return None if body is None else self.resolve_string(body, context, base_url=str(path))


@dataclass(frozen=True, slots=True)
class CompiledSchema:
    schema: etree.XMLSchema
    uses_by_tag: dict[str, tuple[CatalogUse, ...]]
    fast: bool


@cache
def compile_schema(fast: bool = True) -> CompiledSchema:
    """Compile once per process (``fast=False``: SAT's stock schema, for comparison and benchmarks).

    The fast schema's preparation is also kept on disk between processes (schema_cache).
    """
    if fast:
        directory, key = schema_cache.cache_dir(), schema_cache.cache_key()
        prepared = schema_cache.load(directory, key)
        if prepared is None:
            prepared = prepare_fast_schema()
            schema_cache.store(directory, key, prepared)
    else:
        prepared = _stock_schema()
    return compile_prepared(prepared, fast)


def compile_prepared(prepared: PreparedSchema, fast: bool = True) -> CompiledSchema:
    wrapper = (f'<xs:schema xmlns:xs="{XS}">'
               + "".join(f'<xs:import namespace="{ns}" schemaLocation="{path.as_uri()}"/>'
                         for ns, path in prepared.imports)
               + "</xs:schema>")
    parser = _safe_parser()
    parser.resolvers.add(_LocalSchemas(prepared.edited))
    schema = etree.XMLSchema(etree.fromstring(wrapper.encode(), parser, base_url=str(cfdv40_xsd())))
    by_tag: dict[str, list[CatalogUse]] = {}
    for use in prepared.uses:
        by_tag.setdefault(use.path[-1], []).append(use)
    return CompiledSchema(schema, {k: tuple(v) for k, v in by_tag.items()}, fast)


def prepare_fast_schema() -> PreparedSchema:
    """Read SAT's documents, taking the big enumerations out (the slow part: ~0.5 s)."""
    docs, catalogs, changed = _load_closure(root_xsds(), strip=True)
    return PreparedSchema(imports=_imports(docs), edited={p: etree.tostring(docs[p]) for p in changed},
                          uses=tuple(_attribute_uses(docs, catalogs)))


def _stock_schema() -> PreparedSchema:
    docs, _catalogs, _changed = _load_closure(root_xsds(), strip=False)
    return PreparedSchema(imports=_imports(docs), edited={}, uses=())


def _imports(docs: dict[Path, etree._ElementTree]) -> tuple[tuple[str, Path], ...]:
    return tuple((docs[p.resolve()].getroot().get("targetNamespace", ""), p.resolve()) for p in root_xsds())


def _namespace(tag: str) -> str:
    return tag[1:].partition("}")[0] if tag.startswith("{") else ""


def _doc_path(el: etree._Element) -> tuple[str, ...]:
    ns = _namespace(el.tag)
    path = [el.tag]
    for anc in el.iterancestors():
        if _namespace(anc.tag) != ns:
            break
        path.append(anc.tag)
    return tuple(reversed(path))


class SchemaValidator:
    """Checks one parsed ``cfdi:Comprobante`` (Addenda already removed) against the schema.

    One instance per thread: lxml's XMLSchema keeps its error log on the object.
    """

    def __init__(self, fast: bool = True, compiled: CompiledSchema | None = None) -> None:
        self._compiled = compiled or compile_schema(fast)
        self._tags = tuple(self._compiled.uses_by_tag)
        by_ns: dict[str, list[str]] = {}
        for tag in self._tags:
            by_ns.setdefault(_namespace(tag), []).append(tag)
        self._tags_by_ns = {ns: tuple(tags) for ns, tags in by_ns.items()}

    def violations(self, root: etree._Element) -> list[Violation]:
        found: list[Violation] = []
        schema = self._compiled.schema
        if not schema.validate(root):
            for entry in schema.error_log:
                found.append(Violation(RuleId.XSD, _sat_code_of(entry.message)))
        if self._tags:
            found.extend(self._catalog_violations(root))
        if not found:
            return []
        # One XSD violation per distinct SAT code keeps the list short and still says which field.
        return list(dict.fromkeys(found))

    def _catalog_violations(self, root: etree._Element) -> Iterator[Violation]:
        uses_by_tag = self._compiled.uses_by_tag
        # Only the namespaces this document uses: lxml's tag filter costs per candidate tag.
        namespaces = {_namespace(root.tag)}
        for el in root.iter(f"{{{CFDI_NS}}}Complemento", f"{{{CFDI_NS}}}ComplementoConcepto"):
            namespaces.update(_namespace(child.tag) for child in el.iterchildren("{*}*"))
        tags = [t for ns in namespaces for t in self._tags_by_ns.get(ns, ())]
        if not tags:
            return
        for el in root.iter(*tags):
            path: tuple[str, ...] | None = None
            for use in uses_by_tag[el.tag]:
                value = el.get(use.attribute)
                if value is None or use.catalog.accepts(value):
                    continue
                # The same element name may be declared elsewhere with another type: the path decides.
                path = path or _doc_path(el)
                if path[-len(use.path):] == use.path:
                    local = el.tag.rpartition("}")[2]
                    yield Violation(RuleId.XSD, XSD_ATTRIBUTE_SAT_CODE.get((local, use.attribute)))


def _sat_code_of(message: str) -> SatCode | None:
    m = _XSD_MESSAGE.match(message)
    if m is None or m.group(2) is None:
        return None
    return XSD_ATTRIBUTE_SAT_CODE.get((m.group(1), m.group(2)))
