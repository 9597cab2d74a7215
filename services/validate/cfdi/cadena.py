"""The cadena original of a CFDI 4.0, built in one pass over the parsed tree (no libxslt at run time).

SAT defines the cadena by ``cadenaoriginal_4_0.xslt`` and the 33 stylesheets it includes.  Running
them with libxslt costs ~200–300 µs per invoice, a fifth of the validator's time; yet they use a small
subset of XSLT: one template per element, printing attributes through the ``Requerido`` /
``Opcional`` helpers (``|`` + normalize-space of the value) and visiting children by simple paths.
So the stylesheets themselves are read at start-up and each template is compiled into a Python
function (~a quarter of libxslt's time) — SAT's files stay the definition, nothing is transcribed by
hand.  Anything outside that subset raises ``UnsupportedStylesheet`` and the validator keeps SAT's XSLT
(``shared.cfdi.cadena``), which is also the reference the tests compare this with.

XSLT details kept: an element without a template gets the built-in rule (its descendant text is
printed as is: a TFD or an unknown complement written with text inside leaks into the cadena, as
with libxslt); ``Opcional`` prints a present-but-empty attribute; normalize-space strips only XML
white space (space, tab, CR, LF), not U+00A0 and friends.
"""

from __future__ import annotations

import linecache
import re
from collections.abc import Callable
from pathlib import Path

from lxml import etree

from shared.cfdi.sat_files import cadena_xslt

XSL = "{http://www.w3.org/1999/XSL/Transform}"
CFDI_NS = "http://www.sat.gob.mx/cfd/4"
COMPROBANTE = f"{{{CFDI_NS}}}Comprobante"
_HELPERS = {"Requerido": True, "Opcional": False}  # named template → whether it prints an absent value
_INSTRUCTION_ATTRIBUTE = {f"{XSL}call-template": "name", f"{XSL}apply-templates": "select",
                          f"{XSL}for-each": "select", f"{XSL}if": "test"}
_XML_BLANKS = re.compile(r"[ \t\n\r]+")
_ATTRIBUTE = re.compile(r"\./@([^\s/\[\]()=@*:|]+)")
_QNAME = r"[^\s/\[\]()=@*:|.$']+:[^\s/\[\]()=@*:|$']+"
_CHILD_PATH = re.compile(rf"(?:\./)?(?:{_QNAME}|\*)(?:/(?:{_QNAME}|\*))*")
_DESCENDANT = re.compile(rf"\.//({_QNAME})")
_CHILD = re.compile(rf"(?:\./)?({_QNAME})")

Out = list[str]


class UnsupportedStylesheet(ValueError):
    """SAT's stylesheet uses an XSLT construct this compiler does not know."""


def normalize_space(value: str) -> str:
    """XPath's normalize-space: XML white space only (``str.split`` would also split on U+00A0)."""
    if value.isascii():  # in ASCII, the characters str.split() takes as blanks beyond XML's are not legal XML
        return " ".join(value.split())
    return _XML_BLANKS.sub(" ", value).strip(" ")


class CadenaBuilder:
    """Compiled once from SAT's stylesheets; ``builder(root)`` is the XSLT's output for that tree.

    Holds compiled lxml XPath objects for the rare expressions that are not a plain attribute or
    child path: one builder per thread, like the validator that owns it.
    """

    def __init__(self, stylesheet: Path | None = None) -> None:
        path = stylesheet or cadena_xslt()
        main = _parse(path)
        sheets = [_parse((path.parent / (inc.get("href") or "")).resolve())
                  for inc in main.iterchildren(f"{XSL}include")]
        if any(True for sheet in sheets for _ in sheet.iterchildren(f"{XSL}include", f"{XSL}import")):
            raise UnsupportedStylesheet("nested xsl:include")
        _check_main_root(main)
        sheets.append(main)  # last: the main stylesheet's root template wins over a complement's
        self._exact = _Program(sheets, normalize=True)
        self._raw = _Program(sheets, normalize=False)

    def __call__(self, root: etree._Element) -> str:
        # Almost no value needs normalize-space: print them as written, then look for what
        # normalizing would have changed.  A value with blanks at either end or inside shows as
        # "| ", " |" or "  " in the cadena (every value is printed after a "|" and followed by
        # one), or as a tab/CR/LF; text printed by the built-in rule is not delimited, so it
        # sends the document down the exact path too.
        cadena, delimited = self._raw.run(root)
        if delimited and not ("  " in cadena or "| " in cadena or " |" in cadena
                              or "\t" in cadena or "\n" in cadena or "\r" in cadena):
            return cadena
        return self._exact.run(root)[0]


class _Program:
    """The templates of SAT's stylesheets, each compiled into one Python function.

    A template becomes a list of operations (attribute fields, literal text, apply-templates,
    for-each, if, an XPath field), and the list becomes the source of one function, compiled once:
    a run of consecutive ``Requerido``/``Opcional`` attribute fields is one string expression
    appended once, children are selected by a dictionary look-up, and templates call each other
    directly.  Interpreted step by step (a closure per step, a loop over each run of fields) the
    same work took ~15 % longer: 61-63 against 53-55 µs per generated invoice, one core.

    ``normalize=False`` prints attribute values without normalize-space (``CadenaBuilder`` checks
    afterwards whether that made a difference).
    """

    def __init__(self, sheets: list[etree._Element], *, normalize: bool) -> None:
        self._normalize = normalize
        self._templates: dict[str, _Run] = {}
        self._literals_delimited = True  # every literal text starts with "|"
        self._printed_text = False
        self._bodies = 0
        for sheet in sheets:
            self._add_stylesheet(sheet)

    def run(self, root: etree._Element) -> tuple[str, bool]:
        """The cadena, and whether every printed piece starts with "|"."""
        out: Out = ["|"]
        self._printed_text = False
        if root.tag == COMPROBANTE:  # the main "/" template: "|", apply-templates /cfdi:Comprobante, "||"
            self._apply(root, out)
        out.append("||")
        return "".join(out), self._literals_delimited and not self._printed_text

    # --- run time ---------------------------------------------------------------------------
    def _apply(self, el: etree._Element, out: Out) -> None:
        body = self._templates.get(el.tag)
        if body is None:
            self._builtin(el, out)
        else:
            body(el, out, None)

    def _builtin(self, el: etree._Element, out: Out) -> None:
        """XSLT's built-in rule for an element: apply templates to its children, print text nodes."""
        if el.text:
            out.append(el.text)
            self._printed_text = True
        for child in el:
            if isinstance(child.tag, str):
                self._apply(child, out)
            # comments and processing instructions print nothing, the text after them does
            if child.tail:
                out.append(child.tail)
                self._printed_text = True

    # --- compile time -----------------------------------------------------------------------
    def _add_stylesheet(self, sheet: etree._Element) -> None:
        for node in sheet:
            if not isinstance(node.tag, str):
                continue
            if node.tag in (f"{XSL}include", f"{XSL}output"):
                if node.tag == f"{XSL}output" and node.get("method") != "text":
                    raise UnsupportedStylesheet("output method other than text")
                continue
            if node.tag != f"{XSL}template":
                raise UnsupportedStylesheet(f"top-level {node.tag}")
            match, name = node.get("match"), node.get("name")
            if set(node.attrib) - {"match", "name"}:
                raise UnsupportedStylesheet(f"template attributes {sorted(node.attrib)}")
            if name is not None:
                if name not in (*_HELPERS, "ManejaEspacios"):
                    raise UnsupportedStylesheet(f"named template {name}")
                continue  # the helpers are built in (normalize_space)
            if match == "/":
                # the main stylesheet's (checked, built into ``run``) wins over a complement's own:
                # it is declared last
                continue
            tag = _clark(node, match or "")
            if tag in self._templates:
                raise UnsupportedStylesheet(f"two templates match {match}")
            self._templates[tag] = self._body(node)

    def _body(self, parent: etree._Element) -> _Run:
        """The template (or for-each / if) under ``parent``, compiled."""
        body = _Source(self._normalize)
        fields: list[tuple[str, bool]] = []  # consecutive attribute fields, printed by one append

        def flush() -> None:
            if fields:
                body.fields(fields)
                fields.clear()

        self._literal(parent.text, body)
        for node in parent:
            if isinstance(node.tag, str):
                attribute = _attribute_field(node)
                if attribute is not None:
                    fields.append(attribute)
                else:
                    flush()
                    self._instruction(node, body)
            if node.tail and node.tail.strip(" \t\r\n"):
                flush()
                self._literal(node.tail, body)
        flush()
        self._bodies += 1
        return body.compile(f"_body_{self._bodies}", self._apply)

    def _literal(self, text: str | None, body: _Source) -> None:
        # XSLT drops white-space-only text of a stylesheet (outside xsl:text)
        if text and text.strip(" \t\r\n"):
            self._literals_delimited = self._literals_delimited and text.startswith("|")
            body.line(f"a({body.value(text)})")

    def _instruction(self, node: etree._Element, body: _Source) -> None:
        tag = node.tag
        if set(node.attrib) != {_INSTRUCTION_ATTRIBUTE.get(tag)}:  # mode=, an implicit select, ...
            raise UnsupportedStylesheet(f"instruction {tag} with {sorted(node.attrib)}")
        if tag == f"{XSL}call-template":
            body.line(f"{body.value(_xpath_field(node))}(el, out)")
            return
        if tag == f"{XSL}apply-templates":
            if len(node):
                raise UnsupportedStylesheet("apply-templates with parameters or sorting")
            # each target's template found by its tag at run time (the table fills as sheets are read)
            body.line(f"for t in {_select(node, node.get('select'), body)}:")
            body.line("    A(t, out)")
            return
        if tag == f"{XSL}for-each":
            select = _select(node, node.get("select"), body)
            inner = body.value(self._body(node))
            body.line(f"for t in {select}:")
            body.line(f"    {inner}(t, out, None)")
            return
        if tag == f"{XSL}if":
            test = _test(node, node.get("test"), body)
            inner = body.value(self._body(node))
            body.line(f"if {test}:")
            body.line(f"    {inner}(el, out, kids)")  # the same context: its children as grouped here
            return
        raise UnsupportedStylesheet(f"instruction {tag}")


# A compiled template: (context element, output, its children by tag if already grouped, else None).
_Run = Callable[[etree._Element, Out, "_Kids"], None]
_Kids = dict[object, list[etree._Element]] | None


class _Source:
    """The source of one compiled body, and the objects its code refers to.

    Most selections are "the children named X": when a body makes any, the context's children
    are grouped by tag once, in one pass (each lxml iterator with a tag filter costs ~1 µs).
    """

    def __init__(self, normalize: bool) -> None:
        self.normalize = normalize
        self.needs_children = False
        self.uses_get = False
        self.lines: list[str] = []
        self.names: dict[str, object] = {}

    def value(self, obj: object) -> str:
        """A name in the compiled code for ``obj`` (a string, a tag, an XPath, a function)."""
        name = f"_v{len(self.names)}"
        self.names[name] = obj
        return name

    def line(self, code: str) -> None:
        self.lines.append(code)

    def fields(self, fields: list[tuple[str, bool]]) -> None:
        """``Requerido``/``Opcional`` of ``./@Name``, consecutive: "|" + the value each (an absent
        required one prints "|", an absent optional one nothing), one string appended."""
        self.uses_get = True
        wrap = "N({})" if self.normalize else "{}"
        parts = []
        for name, required in fields:
            if required:  # "|" + "" for an absent one, as for an empty one
                parts.append('"|" + ' + wrap.format(f"(g({self.value(name)}) or '')"))
            else:
                parts.append(f"('' if (v := g({self.value(name)})) is None else '|' + {wrap.format('v')})")
        self.line(f"a({' + '.join(parts)})")

    def compile(self, name: str, apply: Callable[[etree._Element, Out], None]) -> _Run:
        head = [f"def {name}(el, out, kids):", "    a = out.append"]
        if self.uses_get:
            head.append("    g = el.get")
        if self.needs_children:
            head.append("    if kids is None:")
            head.append("        kids = _children(el)")
        code = "\n".join(head + [f"    {line}" for line in self.lines])
        scope: dict[str, object] = {**self.names, "A": apply, "N": normalize_space, "_children": _children}
        # Only this class's code is compiled: every value taken from the stylesheets (names, tags,
        # text, XPath objects) reaches it through ``scope``, never spliced into the source.
        filename = f"<cadena {'normalized' if self.normalize else 'raw'} {name}>"
        exec(compile(code, filename, "exec"), scope)
        # Its source where tracebacks and debuggers look for it (the file name is not a file).
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        return scope[name]  # type: ignore[return-value]


_ELEMENTS = object()  # key of all element children in ``_Kids``


def _children(el: etree._Element) -> dict[object, list[etree._Element]]:
    kids: dict[object, list[etree._Element]] = {_ELEMENTS: []}
    for child in el:
        tag = child.tag
        if isinstance(tag, str):
            kids[_ELEMENTS].append(child)
            group = kids.get(tag)
            if group is None:
                kids[tag] = [child]
            else:
                group.append(child)
    return kids


def _select(node: etree._Element, expr: str | None, body: _Source) -> str:
    """The code of a node-set of elements: ".", a child path ("./a:b/a:c", "a:b", "./*") or ".//a:b"."""
    expr = (expr or "").strip()
    if expr == ".":
        return "(el,)"
    descendant = _DESCENDANT.fullmatch(expr)
    if descendant is not None:
        return f"el.iterdescendants({body.value(_clark(node, descendant.group(1)))})"
    if _CHILD_PATH.fullmatch(expr):
        path = expr.removeprefix("./")
        if "/" in path:
            # libxml2's XPath walks a longer path faster than nested lxml iterators
            return f"{body.value(_xpath(node, expr))}(el)"
        body.needs_children = True
        key: object = _ELEMENTS if path == "*" else _clark(node, path)
        return f"kids.get({body.value(key)}, ())"
    raise UnsupportedStylesheet(f"select {expr!r}")


def _test(node: etree._Element, expr: str | None, body: _Source) -> str:
    expr = (expr or "").strip()
    child = _CHILD.fullmatch(expr)
    if child is not None:
        body.needs_children = True
        return f"{body.value(_clark(node, child.group(1)))} in kids"
    return f"{body.value(_xpath(node, f'boolean({expr})'))}(el)"


def _xpath_field(node: etree._Element) -> Callable[[etree._Element, Out], None]:
    """``Requerido``/``Opcional`` of any other value (".", "a:b/a:c"): libxml2's own XPath
    computes string() and normalize-space()."""
    required, expr = _helper_call(node)
    present = _xpath(node, f"boolean({expr})")
    text = _xpath(node, f"normalize-space(string({expr}))")

    def xpath_field(el: etree._Element, out: Out) -> None:
        if required or present(el):
            out.append("|" + str(text(el)))

    return xpath_field


def _helper_call(node: etree._Element) -> tuple[bool, str]:
    """(prints when absent, the ``valor`` expression) of a call to ``Requerido``/``Opcional``."""
    name = node.get("name") or ""
    params = list(node)
    if name not in _HELPERS or set(node.attrib) != {"name"} or len(params) != 1 \
            or params[0].tag != f"{XSL}with-param" or set(params[0].attrib) != {"name", "select"} \
            or params[0].get("name") != "valor" or len(params[0]) or (params[0].text or "").strip():
        raise UnsupportedStylesheet(f"call-template {name}")
    return _HELPERS[name], (params[0].get("select") or "").strip()


def _attribute_field(node: etree._Element) -> tuple[str, bool] | None:
    """(attribute name, required) when ``node`` prints ``./@Name``."""
    if node.tag != f"{XSL}call-template":
        return None
    required, expr = _helper_call(node)
    attribute = _ATTRIBUTE.fullmatch(expr)
    return None if attribute is None else (attribute.group(1), required)


def _xpath(node: etree._Element, expr: str) -> etree.XPath:
    namespaces = {prefix: uri for prefix, uri in node.nsmap.items() if prefix}
    try:
        return etree.XPath(expr, namespaces=namespaces)
    except etree.XPathSyntaxError as exc:
        raise UnsupportedStylesheet(f"XPath {expr!r}: {exc}") from exc


def _parse(path: Path) -> etree._Element:
    parser = etree.XMLParser(no_network=True, resolve_entities=False, load_dtd=False, remove_comments=True)
    return etree.parse(str(path), parser).getroot()


def _clark(node: etree._Element, qname: str) -> str:
    prefix, sep, local = qname.partition(":")
    uri = node.nsmap.get(prefix) if sep else None
    if not sep or uri is None or not local or ":" in local:
        raise UnsupportedStylesheet(f"name {qname!r}")
    return f"{{{uri}}}{local}"


def _check_main_root(sheet: etree._Element) -> None:
    roots = [t for t in sheet.iterchildren(f"{XSL}template") if t.get("match") == "/"]
    if len(roots) != 1:
        raise UnsupportedStylesheet("the main stylesheet has no root template")
    template = roots[0]
    children = list(template)
    if (template.text != "|" or len(children) != 1 or children[0].tag != f"{XSL}apply-templates"
            or _clark(children[0], (children[0].get("select") or "").removeprefix("/")) != COMPROBANTE
            or children[0].tail != "||"):
        raise UnsupportedStylesheet("the main stylesheet's root template changed")
