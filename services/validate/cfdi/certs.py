"""Certificates: the issuer's CSD embedded in each CFDI, the trusted CAs, the stamping certificates.

Trust is configuration (spec §7.1): a ``TrustStore`` holds CA certificates, each labelled with
the source it came from ("sat-prod", "sat-test", "custom", or a label given by the operator), and
every verdict records the label of the CA its certificate chains to.  Chain checking is done with
``cryptography`` directly (issuer name + issuer signature, up to an anchor in the store): it is a
dict lookup and one RSA verify (~20 µs), cached per certificate, and it never raises on an unknown
issuer (satcfdi's CertificateStore raises KeyError there).
"""

from __future__ import annotations

import io
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.x509.oid import NameOID

from shared.cfdi.sat_files import prod_ca_zip

OID_X500_UNIQUE_IDENTIFIER = x509.ObjectIdentifier("2.5.4.45")
UNTRUSTED = "untrusted"
SAT_PROD = "sat-prod"
SAT_TEST = "sat-test"
CUSTOM = "custom"
_CERT_SUFFIXES = (".cer", ".crt", ".pem", ".der")


def load_certificate(data: bytes) -> x509.Certificate:
    """DER or PEM; raises ValueError when it is neither."""
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


def serial_as_no_certificado(cert: x509.Certificate) -> str:
    """SAT writes the 20-digit certificate number as ASCII digits inside the serial's hex bytes."""
    raw = format(cert.serial_number, "x")
    try:
        return bytes.fromhex(raw if len(raw) % 2 == 0 else "0" + raw).decode("ascii")
    except (ValueError, UnicodeDecodeError):
        return raw


@dataclass(frozen=True, slots=True)
class CertInfo:
    """What the validator needs from an issuer certificate, extracted once per distinct certificate."""

    cert: x509.Certificate
    public_key: RSAPublicKey | None
    no_certificado: str
    rfc: str | None
    is_csd: bool
    not_before: datetime
    not_after: datetime

    @classmethod
    def from_der(cls, der: bytes) -> CertInfo:
        cert = x509.load_der_x509_certificate(der)
        key = cert.public_key()
        return cls(
            cert=cert,
            public_key=key if isinstance(key, RSAPublicKey) else None,
            no_certificado=serial_as_no_certificado(cert),
            rfc=_rfc_of(cert),
            is_csd=_is_csd(cert),
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
        )


def _rfc_of(cert: x509.Certificate) -> str | None:
    attrs = cert.subject.get_attributes_for_oid(OID_X500_UNIQUE_IDENTIFIER)
    if not attrs:
        return None
    value = attrs[0].value
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    # "EKU9003173C9 / VADA800927DJ3": company RFC, then the legal representative's
    return text.split("/")[0].strip() or None


def _is_csd(cert: x509.Certificate) -> bool:
    """A CSD signs only; a FIEL (e.firma) also enciphers/agrees keys and has no OU (branch)."""
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if usage is not None and (usage.data_encipherment or usage.key_agreement):
        return False
    return bool(cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)) or usage is not None


class CertCache:
    """Parsed issuer certificates by their DER bytes (a few thousand issuers, many invoices each)."""

    def __init__(self, max_entries: int = 4096) -> None:
        self._max = max_entries
        self._items: OrderedDict[bytes, CertInfo | None] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, der: bytes) -> CertInfo | None:
        """None when the bytes are not a usable X.509 certificate."""
        with self._lock:
            if der in self._items:
                self._items.move_to_end(der)
                return self._items[der]
        try:
            info: CertInfo | None = CertInfo.from_der(der)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            info = None
        with self._lock:
            self._items[der] = info
            if len(self._items) > self._max:
                self._items.popitem(last=False)
        return info


@dataclass(frozen=True, slots=True)
class _Anchor:
    cert: x509.Certificate
    label: str


@dataclass
class TrustStore:
    """Trusted CA certificates, each labelled by its source; issuer lookups by subject name."""

    _by_subject: dict[bytes, list[_Anchor]] = field(default_factory=dict)
    _issuers: dict[bytes, tuple[_Anchor | None]] = field(default_factory=dict)  # by certificate DER
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def default(cls, extra: Iterable[str | Path] = (), include_production: bool = True) -> TrustStore:
        """SAT's production CA (bundled in satcfdi) plus ``extra`` sources: file, directory or .zip.

        A source may be written ``LABEL=PATH`` to name its trust level; otherwise SAT's test bundle
        (``SATCertsPruebas.zip``) is labelled "sat-test" and anything else "custom".
        """
        store = cls()
        if include_production:
            store.add_path(prod_ca_zip(), SAT_PROD)
        for source in extra:
            text = str(source)
            label, sep, path = text.partition("=")
            if not sep or "/" in label:
                label, path = "", text
            store.add_path(Path(path), label or None)
        return store

    def add_path(self, path: Path, label: str | None = None) -> int:
        """Add every certificate found at ``path``; returns how many. Raises FileNotFoundError."""
        if not path.exists():
            raise FileNotFoundError(path)
        label = label or (SAT_TEST if path.name.lower().startswith("satcertspruebas") else CUSTOM)
        count = 0
        for blob in _certificate_blobs(path):
            try:
                self.add(load_certificate(blob), label)
                count += 1
            except ValueError:
                continue  # a README or a key next to the certificates
        return count

    def add(self, cert: x509.Certificate, label: str) -> None:
        with self._lock:
            self._by_subject.setdefault(cert.subject.public_bytes(), []).append(_Anchor(cert, label))
            self._issuers.clear()

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_subject.values())

    def trust_level(self, cert: x509.Certificate, cache_key: bytes,
                    at: tuple[datetime, datetime] | None = None) -> str:
        """Label of the trusted CA that issued ``cert`` (``cache_key``: its DER), or "untrusted".

        With ``at`` (the UTC window of the document's Fecha) the certificate must be valid at some
        instant of it: trust is judged when the document was sealed.  CA validity periods are not
        checked: SAT's CAs expire while the certificates they issued stay in use (SAT's test CA
        AC_4096_2018 expired in 2022, its CSDs in 2023).
        """
        with self._lock:
            known = self._issuers.get(cache_key)
        if known is None:
            known = self._issuer_of(cert)
            with self._lock:
                self._issuers[cache_key] = known
        anchor = known[0] if known else None
        if anchor is None:
            return UNTRUSTED
        if at is not None:
            lo, hi = at
            if cert.not_valid_before_utc > hi or cert.not_valid_after_utc < lo:
                return UNTRUSTED
        return anchor.label

    def _issuer_of(self, cert: x509.Certificate) -> tuple[_Anchor | None]:
        for anchor in self._by_subject.get(cert.issuer.public_bytes(), []):
            try:
                cert.verify_directly_issued_by(anchor.cert)
            except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
                continue
            return (anchor,)
        return (None,)


def _certificate_blobs(path: Path) -> Iterable[bytes]:
    if path.is_dir():
        for child in sorted(path.rglob("*")):
            if child.is_file():
                yield from _certificate_blobs(child)
    elif path.suffix.lower() == ".zip":
        with zipfile.ZipFile(path) as zf:
            for name in zf.namelist():
                if not name.endswith("/"):
                    yield from _certificate_blobs_in(name, zf.read(name))
    else:
        yield from _certificate_blobs_in(path.name, path.read_bytes())


def _certificate_blobs_in(name: str, data: bytes) -> Iterable[bytes]:
    if name.lower().endswith(".zip"):
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            for inner in zf.namelist():
                yield from _certificate_blobs_in(inner, zf.read(inner))
    elif name.lower().endswith(_CERT_SUFFIXES):
        if b"-----BEGIN CERTIFICATE-----" in data:
            # a PEM bundle may hold several certificates
            for part in data.split(b"-----END CERTIFICATE-----")[:-1]:
                yield part[part.index(b"-----BEGIN") :] + b"-----END CERTIFICATE-----\n"
        else:
            yield data


@dataclass
class StampCertStore:
    """Stamping certificates (the TFD's SelloSAT signer) by NoCertificadoSAT."""

    _keys: dict[str, RSAPublicKey] = field(default_factory=dict)

    @classmethod
    def from_directory(cls, directory: str | Path | None) -> StampCertStore:
        """Files named ``<NoCertificadoSAT>.cer`` (DER or PEM); the serial inside is used when it matches."""
        store = cls()
        if directory is None or str(directory) == "":
            return store
        path = Path(directory)
        if not path.is_dir():
            raise NotADirectoryError(path)
        for child in sorted(path.iterdir()):
            if child.is_file() and child.suffix.lower() in _CERT_SUFFIXES:
                try:
                    cert = load_certificate(child.read_bytes())
                except ValueError:
                    continue
                store.add(cert, child.stem)
        return store

    def add(self, cert: x509.Certificate, number: str | None = None) -> None:
        key = cert.public_key()
        if isinstance(key, RSAPublicKey):
            self._keys[number or serial_as_no_certificado(cert)] = key
            self._keys.setdefault(serial_as_no_certificado(cert), key)

    def get(self, no_certificado_sat: str) -> RSAPublicKey | None:
        return self._keys.get(no_certificado_sat)

    def __len__(self) -> int:
        return len(self._keys)
