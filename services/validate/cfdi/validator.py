"""The CFDI 4.0 validator: bytes in, ``ValidationResult`` out; pure domain code (no Kafka, no I/O).

Layers (spec §2): L0 transport → L1 schema → L2 seal and certificate → L3 coherence → L4 stamp.
Every failed rule is reported, except that a schema-invalid document is not interpreted further
(its amounts and codes cannot be trusted; the reference validator does the same).  The trust level
is computed whenever the embedded certificate can be read.
"""

from __future__ import annotations

import base64
import binascii
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from lxml import etree

from services.validate.cfdi.cadena import CadenaBuilder, UnsupportedStylesheet
from services.validate.cfdi.certs import UNTRUSTED, CertCache, CertInfo, StampCertStore, TrustStore
from services.validate.cfdi.coherence import CFDI, Children, children_by_tag, coherence_violations, dec, first_child
from services.validate.cfdi.result import ValidationResult, Verdict
from services.validate.cfdi.rules import RuleId, Violation
from services.validate.cfdi.schema import SchemaValidator
from services.validate.cfdi.transport import new_parser, parse
from shared.cfdi.cadena import cadena_original, tfd_cadena
from shared.cfdi.facts import concept_lines

log = logging.getLogger(__name__)

TFD = "{http://www.sat.gob.mx/TimbreFiscalDigital}TimbreFiscalDigital"
DEFAULT_MAX_BYTES = 5 * 1024 * 1024
_DER_CACHE_ENTRIES = 256
# Fecha is local time of LugarExpedicion, no zone: Mexico spans UTC-5 (Quintana Roo) to UTC-8
# (Baja California), so a certificate instant is compared against that whole window.
_MX_OFFSETS = (timedelta(hours=5), timedelta(hours=8))
# PACs refuse a Fecha older than 72 h or in the future; ±3 h absorbs the time-zone gap.
_STAMP_BEFORE = timedelta(hours=-3)
_STAMP_AFTER = timedelta(hours=75)


def _b64(text: str | None) -> bytes | None:
    if not text:
        return None
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        return None


def _collapse(text: str) -> str:
    return " ".join(text.split())


def fecha_window_utc(fecha: datetime) -> tuple[datetime, datetime]:
    """The UTC instants a zone-less Mexican Fecha may stand for."""
    return (fecha + _MX_OFFSETS[0]).replace(tzinfo=UTC), (fecha + _MX_OFFSETS[1]).replace(tzinfo=UTC)


def _fecha(text: str | None) -> datetime | None:
    if text is None:
        return None
    t = text.strip()
    # t_FechaH is exactly AAAA-MM-DDThh:mm:ss; slicing is ~20x cheaper than strptime
    if len(t) != 19 or t[4] != "-" or t[7] != "-" or t[10] != "T" or t[13] != ":" or t[16] != ":":
        return None
    try:
        return datetime(int(t[0:4]), int(t[5:7]), int(t[8:10]), int(t[11:13]), int(t[14:16]), int(t[17:19]))
    except ValueError:
        return None


def _rsa_sha256_ok(key: RSAPublicKey, signature: bytes | None, message: str) -> bool:
    if signature is None:
        return False
    try:
        key.verify(signature, message.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError):
        return False
    return True


def _cadena_builder() -> Callable[[etree._Element], str]:
    """SAT's cadena XSLT compiled to Python (~2x faster), or the XSLT itself if SAT's files use
    something the compiler does not know (the result is the same, only slower)."""
    try:
        return CadenaBuilder()
    except UnsupportedStylesheet as exc:
        log.warning("cadena original: running SAT's XSLT (%s)", exc)
        return cadena_original


class CfdiValidator:
    """Validates CFDI 4.0 documents.

    Build one per thread (``validate`` reuses an lxml parser, schema and cadena builder that are not
    meant for concurrent use); the trust store, stamping certificates and certificate cache may be shared.
    """

    def __init__(self, trust: TrustStore, stamp_certs: StampCertStore | None = None,
                 max_bytes: int = DEFAULT_MAX_BYTES, *, fast_schema: bool = True,
                 cert_cache: CertCache | None = None) -> None:
        self.trust = trust
        self.stamp_certs = stamp_certs or StampCertStore()
        self.max_bytes = max_bytes
        self._parser = new_parser()
        self._schema = SchemaValidator(fast=fast_schema)
        self._certs = cert_cache or CertCache()
        self._cadena = _cadena_builder()
        self._der_by_text: dict[str, bytes] = {}

    def validate(self, data: bytes) -> ValidationResult:
        """The verdict for ``data``; never raises."""
        try:
            return self._validate(data)
        except Exception:  # the contract is a verdict for every input; a bug must not stop the stage
            log.exception("validator error")
            return ValidationResult(Verdict.INVALID, (Violation.of(RuleId.VALIDATOR_ERROR),))

    def _validate(self, data: bytes) -> ValidationResult:
        parsed = parse(data, self._parser, self.max_bytes)
        if parsed.failure is not None or parsed.root is None:
            return ValidationResult(Verdict.INVALID, (Violation.of(parsed.failure or RuleId.XML_MALFORMED),))
        root = parsed.root
        kids = children_by_tag(root)
        for addenda in kids.get(f"{CFDI}Addenda", ()):
            root.remove(addenda)  # not sealed, not validated by SAT, any namespace

        found: list[Violation] = []
        found += self._schema.violations(root)
        der = self._der(root.get("Certificado") or "")
        cert = self._certs.get(der)
        fecha = _fecha(root.get("Fecha"))
        trust = None
        if cert is not None:
            trust = self.trust.trust_level(cert.cert, der, fecha_window_utc(fecha) if fecha else None)
        tfds = [tfd for c in kids.get(f"{CFDI}Complemento", ()) for tfd in c.iterchildren(TFD)]
        sello_sat_verified = False
        if not found:
            found += self._seal(root, kids, cert, fecha, trust)
            found += coherence_violations(root)
            stamp, sello_sat_verified = self._stamp(root, tfds, fecha)
            found += stamp
        return self._result(root, kids, tfds, found, trust, sello_sat_verified)

    def _der(self, certificado: str) -> bytes:
        """The embedded certificate's DER bytes, decoded once per distinct ``Certificado`` text
        (an issuer seals thousands of invoices with one certificate)."""
        der = self._der_by_text.get(certificado)
        if der is None:
            der = _b64(certificado) or b""
            if len(self._der_by_text) >= _DER_CACHE_ENTRIES:
                self._der_by_text.clear()
            self._der_by_text[certificado] = der
        return der

    # --- L2 ---------------------------------------------------------------------------------
    def _seal(self, root: etree._Element, kids: Children, cert: CertInfo | None, fecha: datetime | None,
              trust: str | None) -> list[Violation]:
        if cert is None or cert.public_key is None:
            return [Violation.of(RuleId.CERT_INVALID)]
        out: list[Violation] = []
        if (root.get("NoCertificado") or "").strip() != cert.no_certificado:
            out.append(Violation.of(RuleId.CERT_NUMBER_MISMATCH))
        emisor = first_child(kids, f"{CFDI}Emisor")
        if cert.rfc is None or emisor is None or (emisor.get("Rfc") or "").strip() != cert.rfc:
            out.append(Violation.of(RuleId.CERT_RFC_MISMATCH))
        if not cert.is_csd:
            out.append(Violation.of(RuleId.CERT_NOT_CSD))
        window = fecha_window_utc(fecha) if fecha else None
        valid_at_fecha = window is not None and cert.not_before <= window[1] and window[0] <= cert.not_after
        if not valid_at_fecha:
            out.append(Violation.of(RuleId.CERT_NOT_VALID_AT_FECHA))
        elif trust == UNTRUSTED:
            # reported only for a certificate usable at Fecha (an expired one is refused already and
            # is "untrusted" at Fecha by construction)
            out.append(Violation.of(RuleId.CERT_UNTRUSTED))
        if not _rsa_sha256_ok(cert.public_key, _b64(root.get("Sello")), self._cadena(root)):
            out.append(Violation.of(RuleId.SELLO_INVALID))
        return out

    # --- L4 ---------------------------------------------------------------------------------
    def _stamp(self, root: etree._Element, tfds: list[etree._Element],
               fecha: datetime | None) -> tuple[list[Violation], bool]:
        if not tfds:
            return [Violation.of(RuleId.TFD_MISSING)], False
        out: list[Violation] = []
        if len(tfds) > 1:
            out.append(Violation.of(RuleId.TFD_MULTIPLE))
        tfd = tfds[0]
        if (tfd.get("Version") or "").strip() != "1.1":
            out.append(Violation.of(RuleId.TFD_VERSION))
        sello_cfd = tfd.get("SelloCFD") or ""
        # both attributes are xs:string with whiteSpace=collapse: compare the collapsed values
        if _collapse(sello_cfd) != _collapse(root.get("Sello") or ""):
            out.append(Violation.of(RuleId.TFD_SELLOCFD_MISMATCH))
        timbrado = _fecha(tfd.get("FechaTimbrado"))
        if fecha is None or timbrado is None or not (_STAMP_BEFORE <= timbrado - fecha <= _STAMP_AFTER):
            out.append(Violation.of(RuleId.TFD_FECHA_RANGE))
        verified = False
        number = (tfd.get("NoCertificadoSAT") or "").strip()
        key = self.stamp_certs.get(number)
        if key is not None:
            cadena = tfd_cadena(tfd.get("UUID") or "", tfd.get("FechaTimbrado") or "", tfd.get("RfcProvCertif") or "",
                                sello_cfd, number, tfd.get("Leyenda"))
            verified = _rsa_sha256_ok(key, _b64(tfd.get("SelloSAT")), cadena)
            if not verified:
                out.append(Violation.of(RuleId.TFD_SELLOSAT_INVALID))
        return out, verified

    # --- result -----------------------------------------------------------------------------
    @staticmethod
    def _result(root: etree._Element, kids: Children, tfds: list[etree._Element], found: list[Violation],
                trust: str | None, sello_sat_verified: bool) -> ValidationResult:
        emisor, receptor = first_child(kids, f"{CFDI}Emisor"), first_child(kids, f"{CFDI}Receptor")
        moneda = root.get("Moneda")
        tipo_cambio = dec(root.get("TipoCambio"))
        total = dec(root.get("Total"))
        rate = Decimal(1) if moneda in ("MXN", "XXX") or tipo_cambio is None else tipo_cambio
        uuid = tfds[0].get("UUID") if tfds else None
        violations = tuple(dict.fromkeys(found))
        lines = concept_lines(kids.get(f"{CFDI}Conceptos", ()))  # one pass; numbers read by the stage if needed
        return ValidationResult(
            verdict=Verdict.INVALID if violations else Verdict.VALID,
            violations=violations,
            uuid=uuid.strip().upper() if uuid else None,
            emisor_rfc=(emisor.get("Rfc") or "").strip() or None if emisor is not None else None,
            receptor_rfc=(receptor.get("Rfc") or "").strip() or None if receptor is not None else None,
            fecha=root.get("Fecha"),
            tipo_de_comprobante=root.get("TipoDeComprobante"),
            moneda=moneda,
            tipo_cambio=tipo_cambio,
            subtotal=dec(root.get("SubTotal")),
            descuento=dec(root.get("Descuento")),
            total=total,
            total_mxn=None if total is None else total * rate,
            conceptos=len(lines),
            trust=trust,
            sello_sat_verified=sello_sat_verified,
            invoice_id=invoice_id(root.get("Serie"), root.get("Folio")),
            lines=lines,
        )


def invoice_id(serie: str | None, folio: str | None) -> str | None:
    """Seed 000's invoice id: Serie followed by Folio as written; None when the CFDI has neither."""
    joined = (serie or "").strip() + (folio or "").strip()
    return joined or None


class RunDuplicates:
    """First valid document per UUID wins within one run; later valid ones become ``duplicate``.

    UUIDs compare case-insensitively (spec §7.3).  Invalid documents neither claim nor lose a UUID:
    an invalid document's UUID is not trusted, and exactly one valid document per UUID is counted.
    Thread-safe.
    """

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def judge(self, result: ValidationResult) -> ValidationResult:
        if result.verdict is not Verdict.VALID or not result.uuid:
            return result
        key = result.uuid.upper()
        with self._lock:
            if key in self._seen:
                return result.as_duplicate()
            self._seen.add(key)
        return result
