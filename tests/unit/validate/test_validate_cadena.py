"""The cadena original built in Python is SAT's XSLT output, byte for byte (libxslt is the reference).

Checked on every public sample, on generated invoices mutated where the XSLT has corner cases
(white space inside values, absent and empty attributes, text, comments and unknown elements where
the built-in rule prints them), and on an instance of every template of SAT's stylesheets.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from services.validate.cfdi.cadena import CadenaBuilder, normalize_space
from services.validate.cfdi.transport import new_parser, parse
from shared.cfdi.cadena import cadena_original
from shared.cfdi.sat_files import cadena_xslt
from tooling.issuers.generator import InvoiceGenerator

C = "{http://www.sat.gob.mx/cfd/4}"
XSL = "{http://www.w3.org/1999/XSL/Transform}"
SAMPLES = (Path(__file__).resolve().parents[3] / ".." / "shared" / "cfdi" / "samples").resolve()
# Values where normalize-space matters; U+00A0 and U+3000 are not XML white space and must stay.
VALUES = ["", " ", "a", "  a  b  ", "\ta\tb\t", "a\nb\r\nc", "x\u00a0y", " \u3000z ", "p|q", "ñ & <é>", "0.160000"]
XML_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\ufffe\uffff",
                                 min_codepoint=0x9).filter(lambda ch: ch in "\t\n\r" or ord(ch) >= 0x20), max_size=12)


@pytest.fixture(scope="module")
def builder() -> CadenaBuilder:
    return CadenaBuilder()  # raises UnsupportedStylesheet if SAT's files left the supported subset


def _same(builder: CadenaBuilder, root: etree._Element) -> None:
    assert builder(root) == cadena_original(root)


def _samples() -> list[Path]:
    return sorted(SAMPLES.rglob("*.xml")) if SAMPLES.is_dir() else []


@pytest.mark.parametrize("path", _samples(), ids=lambda p: p.name)
def test_every_public_sample(path: Path, builder: CadenaBuilder) -> None:
    parsed = parse(path.read_bytes(), new_parser(), 10 * 1024 * 1024)
    if parsed.root is None:
        pytest.skip(f"not XML: {parsed.failure}")
    _same(builder, parsed.root)
    for addenda in parsed.root.findall(f"{C}Addenda"):  # as the validator sees it
        parsed.root.remove(addenda)
    _same(builder, parsed.root)


def test_the_samples_are_there() -> None:
    if not SAMPLES.is_dir():
        pytest.skip("shared samples absent")
    assert len(_samples()) >= 40


def _mutate(root: etree._Element, rng: random.Random, count: int) -> None:
    for _ in range(count):
        elements = [e for e in root.iter() if isinstance(e.tag, str)]
        el = rng.choice(elements)
        kind = rng.randrange(7)
        names = sorted(el.attrib)
        if kind == 0 and names:
            el.set(rng.choice(names), rng.choice(VALUES))
        elif kind == 1 and names:
            name = rng.choice(names)
            el.set(name, rng.choice(VALUES) + (el.get(name) or "") + rng.choice(VALUES))
        elif kind == 2 and names:
            del el.attrib[rng.choice(names)]
        elif kind == 3:
            el.text = rng.choice(VALUES)
        elif kind == 4:
            el.insert(rng.randrange(len(el) + 1), etree.Comment("c"))
            el.tail = rng.choice(VALUES) if el.getparent() is not None else None
        elif kind == 5:
            unknown = etree.SubElement(el, "{urn:example:unknown}Extra", Valor=rng.choice(VALUES))
            unknown.text = rng.choice(VALUES)
            etree.SubElement(unknown, f"{C}CuentaPredial", Numero=rng.choice(VALUES)).tail = rng.choice(VALUES)
        else:
            complemento = root.find(f"{C}Complemento")
            if complemento is None:
                complemento = etree.SubElement(root, f"{C}Complemento")
            tfd = etree.SubElement(complemento, "{http://www.sat.gob.mx/TimbreFiscalDigital}TimbreFiscalDigital",
                                   Version="1.1")
            tfd.text = rng.choice(VALUES)


@settings(max_examples=150, deadline=None)
@given(index=st.integers(0, 300), tipo=st.sampled_from([None, "I", "E", "P"]), seed=st.integers(0, 2**32),
       mutations=st.integers(0, 6))
def test_generated_invoices_mutated(generator: InvoiceGenerator, builder: CadenaBuilder, index: int,
                                   tipo: str | None, seed: int, mutations: int) -> None:
    root = generator.build_tree(index, tipo)
    _mutate(root, random.Random(seed), mutations)
    _same(builder, root)


# --- an instance of every template, built by reading the stylesheets ---------------------------
def _templates() -> dict[str, etree._Element]:
    main = etree.parse(str(cadena_xslt())).getroot()
    sheets = [etree.parse(str((cadena_xslt().parent / i.get("href", "")).resolve())).getroot()
              for i in main.iterchildren(f"{XSL}include")] + [main]
    out: dict[str, etree._Element] = {}
    for sheet in sheets:
        for t in sheet.iterchildren(f"{XSL}template"):
            match = t.get("match")
            if match and match != "/":
                out[_clark(t, match)] = t
    return out


def _clark(node: etree._Element, qname: str) -> str:
    prefix, _, local = qname.strip().partition(":")
    return f"{{{node.nsmap[prefix]}}}{local}"


class _Instances:
    """Elements shaped after a template: attributes it prints (some absent, some blank), and 0–2 of
    each child it visits, recursively (depth-limited)."""

    def __init__(self, templates: dict[str, etree._Element], rng: random.Random) -> None:
        self.templates, self.rng = templates, rng

    def element(self, tag: str, depth: int = 0) -> etree._Element:
        el = etree.Element(tag)
        template = self.templates.get(tag)
        if template is not None and depth < 5:
            self.fill(el, template, depth)
        return el

    def fill(self, el: etree._Element, body: etree._Element, depth: int) -> None:
        for node in body.iterchildren(f"{XSL}call-template", f"{XSL}for-each", f"{XSL}apply-templates", f"{XSL}if"):
            if node.tag == f"{XSL}call-template":
                self.value(el, node, (node[0].get("select") or "").strip())
            elif node.tag == f"{XSL}if":
                test = (node.get("test") or "").strip()
                if test.startswith("./@"):  # ./@version='1.1'
                    el.set(test[3:].split("=")[0], self.rng.choice(["1.1", "1.0"]))
                elif self.rng.random() < 0.7:
                    self.path(el, test, depth, node)
                self.fill(el, node, depth)
            else:
                select = (node.get("select") or "").strip()
                targets = [el] if select == "." else [t for _ in range(self.rng.randrange(3))
                                                       for t in self.path(el, select, depth, node)]
                for target in targets:
                    if node.tag == f"{XSL}for-each":
                        self.fill(target, node, depth + 1)

    def value(self, el: etree._Element, call: etree._Element, select: str) -> None:
        roll = self.rng.random()
        if select.startswith("./@"):
            if roll < 0.8:
                el.set(select[3:], self.rng.choice(VALUES) if roll < 0.3 else f"v{self.rng.randrange(99)}")
        elif select == ".":
            el.text = self.rng.choice(VALUES)
        elif roll < 0.8:
            for leaf in self.path(el, select, 9, call):
                leaf.text = self.rng.choice(VALUES)

    def path(self, el: etree._Element, select: str, depth: int, node: etree._Element) -> list[etree._Element]:
        """Create one chain of the elements ``select`` names (a child path, .//x or ./*); ``node``
        is the instruction, whose namespace declarations resolve the prefixes."""
        steps = select.removeprefix(".//").removeprefix("./").split("/")
        current = el
        for step in steps:
            if step == "*":
                tag = self.rng.choice(sorted(self.templates))
                current.append(self.element(tag, depth + 1))
                return [current[-1]]
            child = etree.SubElement(current, _clark(node, step))
            current = child
        if node.tag == f"{XSL}apply-templates":
            template = self.templates.get(current.tag)
            if template is not None and depth < 5:
                self.fill(current, template, depth + 1)
        return [current]


@pytest.mark.parametrize("seed", range(4))
def test_an_instance_of_every_template(generator: InvoiceGenerator, builder: CadenaBuilder, seed: int) -> None:
    templates = _templates()
    assert len(templates) > 150
    rng = random.Random(seed)
    instances = _Instances(templates, rng)
    for tag in sorted(templates):
        root = generator.build_tree(seed)
        complemento = root.find(f"{C}Complemento")
        if complemento is None:
            complemento = etree.SubElement(root, f"{C}Complemento")
        complemento.append(instances.element(tag))
        assert builder(root) == cadena_original(root), tag


@settings(max_examples=300, deadline=None)
@given(XML_TEXT)
def test_normalize_space_is_xpaths(text: str) -> None:
    assert normalize_space(text) == etree.XPath("normalize-space($s)")(etree.Element("x"), s=text)
