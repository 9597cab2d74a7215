"""Demo PKI made at run time: a CA, issuer CSD certificates and a stamping (PAC/SAT) certificate.

Layout of the directory (the validator reads ``ca/`` via --trust-ca and ``stamp/`` via --stamp-certs):

    pki.json                        index: issuers, numbers, paths (the source of truth for ``load``)
    ca/demo-ca.cer                  self-signed CA, DER
    stamp/<NoCertificadoSAT>.cer    stamping certificate, DER, named by its number as SAT publishes them
    issuers/<NoCertificado>.cer     issuer CSDs, DER
    private/*.key.pem               unencrypted PKCS#8 keys: demo material, never real secrets

Certificates follow SAT's CSD profile so the validator's CERT_* rules see real-looking input:
serial = the 20-digit NoCertificado as ASCII hex, x500UniqueIdentifier (2.5.4.45) carrying the RFC,
an OU (a FIEL has none) and keyUsage digitalSignature+nonRepudiation only.
"""

from __future__ import annotations

import base64
import json
import os
import random
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID

from tooling.issuers import rfc as rfcs
from tooling.issuers.catalog import (
    BORDER_POSTAL_CODES,
    COMPANY_WORDS_A,
    COMPANY_WORDS_B,
    GIVEN_NAMES,
    ISSUER_REGIMES,
    POSTAL_CODES,
    SURNAMES,
    Persona,
)

INDEX_FILE = "pki.json"
DEFAULT_ISSUERS = 20
# Wide enough for any demo date window; the generator refuses a window outside it.
CERT_NOT_BEFORE = datetime(2022, 1, 1, tzinfo=UTC)
CERT_NOT_AFTER = datetime(2031, 1, 1, tzinfo=UTC)
PAC_RFC = "DPF240101AB1"  # the demo PAC's RFC (RfcProvCertif)
_OID_NAME = x509.ObjectIdentifier("2.5.4.41")  # X.520 "name", present in SAT CSD subjects


def serial_from_no_certificado(no_certificado: str) -> int:
    """SAT encodes the 20-digit NoCertificado as the ASCII bytes of the certificate serial."""
    return int(no_certificado.encode("ascii").hex(), 16)


def no_certificado_from_serial(serial: int) -> str:
    return bytes.fromhex(f"{serial:x}").decode("ascii")


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _printable(oid: x509.ObjectIdentifier, value: str) -> x509.NameAttribute[str]:
    # SAT writes x500UniqueIdentifier and serialNumber as PrintableString, not the X.520 BIT STRING.
    return x509.NameAttribute(oid, value, _type=_ASN1Type.PrintableString)


def _write_key(path: Path, key: rsa.RSAPrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _read_key(path: Path) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"{path}: not an RSA key")
    return key


@dataclass(frozen=True, slots=True)
class Issuer:
    """A demo taxpayer with its CSD. ``key`` is loaded once and reused for every signature."""

    rfc: str
    name: str
    regimen: str
    persona: Persona
    lugar_expedicion: str
    no_certificado: str
    cert_der: bytes
    key: rsa.RSAPrivateKey

    @property
    def cert_b64(self) -> str:
        """The ``Certificado`` attribute: base64 of the DER certificate."""
        return base64.b64encode(self.cert_der).decode("ascii")


@dataclass(frozen=True, slots=True)
class StampingAuthority:
    """The demo PAC: signs TimbreFiscalDigital stamps."""

    rfc: str
    no_certificado: str
    cert_der: bytes
    key: rsa.RSAPrivateKey


@dataclass(frozen=True, slots=True)
class _IssuerSpec:
    rfc: str
    name: str
    regimen: str
    persona: Persona
    lugar_expedicion: str
    no_certificado: str
    curp: str
    legal_rep_rfc: str


def _issuer_specs(count: int, seed: int) -> list[_IssuerSpec]:
    rng = random.Random(f"pki:{seed}")
    specs: list[_IssuerSpec] = []
    used: set[str] = set()
    while len(specs) < count:
        # Roughly 60 % companies, 40 % individuals, like a B2B invoice population.
        persona = Persona.MORAL if rng.random() < 0.6 else Persona.FISICA
        birth = rfcs.birth_date(rng)
        person = f"{rng.choice(GIVEN_NAMES)} {rng.choice(SURNAMES)} {rng.choice(SURNAMES)}"
        if persona is Persona.MORAL:
            name = f"{rng.choice(COMPANY_WORDS_A)} {rng.choice(COMPANY_WORDS_B)}"
            rfc = rfcs.rfc_moral(rng, name)
            # The legal representative's RFC and CURP go in the certificate subject, as SAT does.
            legal_rep = rfcs.rfc_fisica(rng, person, birth)
        else:
            name = person
            rfc = rfcs.rfc_fisica(rng, person, birth)
            legal_rep = ""
        if rfc in used or name in {s.name for s in specs}:
            continue
        used.add(rfc)
        places = POSTAL_CODES + BORDER_POSTAL_CODES
        specs.append(_IssuerSpec(
            rfc=rfc, name=name, regimen=rng.choice(ISSUER_REGIMES[persona]), persona=persona,
            lugar_expedicion=rng.choice(places), no_certificado=f"20001000000{300000000 + len(specs) + 1:09d}",
            curp=rfcs.curp(rng, person, birth), legal_rep_rfc=legal_rep,
        ))
    return specs


def _ca_name() -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, "AC DEMO FISCALFLOW"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "FISCALFLOW DEMO"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Autoridad Certificadora de Pruebas"),
        x509.NameAttribute(NameOID.COUNTRY_NAME, "MX"),
    ])


def _make_ca(key: rsa.RSAPrivateKey) -> x509.Certificate:
    name = _ca_name()
    return (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(serial_from_no_certificado("20001000000100000001"))
        .not_valid_before(datetime(2020, 1, 1, tzinfo=UTC)).not_valid_after(datetime(2040, 1, 1, tzinfo=UTC))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def _csd_key_usage() -> x509.KeyUsage:
    # digitalSignature + nonRepudiation: what a CSD carries; dataEncipherment/keyAgreement would make it a FIEL.
    return x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                         encipher_only=False, decipher_only=False)


def _make_csd(subject: x509.Name, no_certificado: str, key: rsa.RSAPrivateKey,
              ca: x509.Certificate, ca_key: rsa.RSAPrivateKey) -> x509.Certificate:
    return (
        x509.CertificateBuilder().subject_name(subject).issuer_name(ca.subject).public_key(key.public_key())
        .serial_number(serial_from_no_certificado(no_certificado))
        .not_valid_before(CERT_NOT_BEFORE).not_valid_after(CERT_NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_csd_key_usage(), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def _issuer_subject(spec: _IssuerSpec) -> x509.Name:
    if spec.persona is Persona.MORAL:
        legal_name = f"{spec.name} SA DE CV"
        unique = f"{spec.rfc} / {spec.legal_rep_rfc}"
        serial = f" / {spec.curp}"
        unit = spec.name.title()
    else:
        legal_name = spec.name
        unique, serial, unit = spec.rfc, spec.curp, spec.name
    return x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, legal_name),
        x509.NameAttribute(_OID_NAME, legal_name),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, legal_name),
        _printable(NameOID.X500_UNIQUE_IDENTIFIER, unique),
        _printable(NameOID.SERIAL_NUMBER, serial),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit),
    ])


def _stamp_subject() -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, "DEMO PAC FISCALFLOW SA DE CV"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "DEMO PAC FISCALFLOW SA DE CV"),
        _printable(NameOID.X500_UNIQUE_IDENTIFIER, f"{PAC_RFC} / "),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Timbrado"),
    ])


@dataclass(frozen=True)
class DemoPKI:
    """A loaded demo PKI. Build with ``create``/``load``/``ensure``; everything is read once."""

    directory: Path
    issuers: tuple[Issuer, ...]
    stamping: StampingAuthority
    seed: int

    # --- paths the validator is configured with -------------------------------------------
    @property
    def ca_cert(self) -> Path:
        """DER certificate of the demo CA (``--trust-ca``)."""
        return self.directory / "ca" / "demo-ca.cer"

    @property
    def stamp_certs_dir(self) -> Path:
        """Directory of stamping certificates named ``<NoCertificadoSAT>.cer`` (``--stamp-certs``)."""
        return self.directory / "stamp"

    # --- lookups used when re-sealing ----------------------------------------------------------
    def issuer_by_no_certificado(self, no_certificado: str) -> Issuer | None:
        return next((i for i in self.issuers if i.no_certificado == no_certificado), None)

    def issuer_by_rfc(self, rfc: str) -> Issuer | None:
        return next((i for i in self.issuers if i.rfc == rfc), None)

    # --- construction ------------------------------------------------------------------------------
    @classmethod
    def create(cls, directory: Path | str, issuers: int = DEFAULT_ISSUERS, seed: int = 0) -> DemoPKI:
        """Generate a fresh PKI into ``directory`` (overwriting its PKI files)."""
        if issuers < 1:
            raise ValueError("at least one issuer is needed")
        root = Path(directory)
        for sub in ("ca", "stamp", "issuers", "private"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        ca_key = _new_key()
        ca = _make_ca(ca_key)
        (root / "ca" / "demo-ca.cer").write_bytes(ca.public_bytes(serialization.Encoding.DER))
        _write_key(root / "private" / "demo-ca.key.pem", ca_key)

        stamp_no = "20001000000200000001"
        stamp_key = _new_key()
        stamp_cert = _make_csd(_stamp_subject(), stamp_no, stamp_key, ca, ca_key)
        (root / "stamp" / f"{stamp_no}.cer").write_bytes(stamp_cert.public_bytes(serialization.Encoding.DER))
        _write_key(root / "private" / "stamp.key.pem", stamp_key)

        index_issuers: list[dict[str, Any]] = []
        for spec in _issuer_specs(issuers, seed):
            key = _new_key()
            cert = _make_csd(_issuer_subject(spec), spec.no_certificado, key, ca, ca_key)
            (root / "issuers" / f"{spec.no_certificado}.cer").write_bytes(
                cert.public_bytes(serialization.Encoding.DER))
            _write_key(root / "private" / f"{spec.no_certificado}.key.pem", key)
            index_issuers.append({
                "rfc": spec.rfc, "name": spec.name, "regimen": spec.regimen, "persona": spec.persona.value,
                "lugar_expedicion": spec.lugar_expedicion, "no_certificado": spec.no_certificado,
            })
        index = {"version": 1, "seed": seed, "pac_rfc": PAC_RFC, "stamp_no_certificado": stamp_no,
                 "issuers": index_issuers}
        # The index is written last and atomically: its presence means the PKI is complete.
        with tempfile.NamedTemporaryFile("w", dir=root, delete=False, suffix=".tmp") as tmp:
            json.dump(index, tmp, indent=2)
        os.replace(tmp.name, root / INDEX_FILE)
        return cls.load(root)

    @classmethod
    def load(cls, directory: Path | str) -> DemoPKI:
        root = Path(directory)
        index = json.loads((root / INDEX_FILE).read_text())
        private = root / "private"
        loaded = tuple(
            Issuer(rfc=item["rfc"], name=item["name"], regimen=item["regimen"], persona=Persona(item["persona"]),
                   lugar_expedicion=item["lugar_expedicion"], no_certificado=item["no_certificado"],
                   cert_der=(root / "issuers" / f"{item['no_certificado']}.cer").read_bytes(),
                   key=_read_key(private / f"{item['no_certificado']}.key.pem"))
            for item in index["issuers"]
        )
        stamp_no = index["stamp_no_certificado"]
        stamping = StampingAuthority(rfc=index["pac_rfc"], no_certificado=stamp_no,
                                     cert_der=(root / "stamp" / f"{stamp_no}.cer").read_bytes(),
                                     key=_read_key(private / "stamp.key.pem"))
        return cls(directory=root, issuers=loaded, stamping=stamping, seed=int(index["seed"]))

    @classmethod
    def ensure(cls, directory: Path | str, issuers: int = DEFAULT_ISSUERS, seed: int = 0) -> DemoPKI:
        """Load the PKI in ``directory`` if one is there, else create it (keys are never regenerated)."""
        if (Path(directory) / INDEX_FILE).is_file():
            return cls.load(directory)
        return cls.create(directory, issuers=issuers, seed=seed)
