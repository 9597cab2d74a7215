"""TLS in front of the local broker, so that every Kafka client can be run over TLS for real.

Tansu 0.6 cannot serve TLS itself (its ``--cert`` and ``--key`` flags are declared conflicting:
either alone is accepted and the listener stays plaintext), so Debian's stunnel4 terminates TLS
on the bootstrap address and forwards to Tansu on a loopback port of its own.  Tansu advertises
the TLS address, so after bootstrapping every client connection goes through TLS: a plaintext
client gets nowhere.  stunnel requires a client certificate signed by the stack's CA (mutual TLS).

The stack's CA, server and client certificates are made once per local directory
(``<local_dir>/kafka-tls``); :func:`tls_settings` gives the client settings that use them.
SASL is not offered: Tansu 0.6's ``--authentication`` refuses every client until a SCRAM
credential exists, and creating one needs an authenticated connection.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shared.settings import Settings
from tooling.stack.component import Component, ensure_debian_package, port_open, split_hostport
from tooling.stack.state import ProcessRecord

TLS_DIR = "kafka-tls"
_VALID = dt.timedelta(days=3650)


def tls_dir(local_dir: Path) -> Path:
    return local_dir / TLS_DIR


def uses_tls(settings: Settings) -> bool:
    return settings.kafka_security_protocol in ("SSL", "SASL_SSL")


def tls_settings(local_dir: Path) -> dict[str, str]:
    """Settings of a client of the local stack's TLS listener (certificates made by the stack)."""
    d = tls_dir(local_dir)
    return {"kafka_security_protocol": "SSL", "kafka_ssl_ca_location": str(d / "ca.crt"),
            "kafka_ssl_certificate_location": str(d / "client.crt"),
            "kafka_ssl_key_location": str(d / "client.key")}


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name | None,
          issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool = False,
          san: list[x509.GeneralName] | None = None, usage: x509.ObjectIdentifier | None = None) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer or name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + _VALID)
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False,
            decipher_only=False), critical=True)
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def ensure_certificates(directory: Path) -> None:
    """The stack's Kafka CA, the listener's certificate (127.0.0.1, ::1, localhost) and a client
    certificate; made once, kept."""
    if all((directory / f).exists() for f in ("ca.crt", "server.crt", "server.key", "client.crt", "client.key")):
        return
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca = _cert("fiscalflow local Kafka CA", ca_key, None, ca_key, ca=True)
    server_key, client_key = _key(), _key()
    san: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                   x509.IPAddress(ipaddress.ip_address("::1"))]
    server = _cert("localhost", server_key, ca.subject, ca_key, san=san, usage=ExtendedKeyUsageOID.SERVER_AUTH)
    client = _cert("fiscalflow-client", client_key, ca.subject, ca_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    for name, cert in (("ca.crt", ca), ("server.crt", server), ("client.crt", client)):
        (directory / name).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(directory / "server.key", server_key)
    _write_key(directory / "client.key", client_key)


def backend_address(settings: Settings) -> str:
    """The loopback address Tansu listens on behind the TLS listener: a free port, chosen once per
    local directory and kept (a restarted broker comes back where stunnel forwards)."""
    path = tls_dir(settings.local_dir) / "backend-port"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            path.write_text(str(s.getsockname()[1]))
    return f"127.0.0.1:{int(path.read_text())}"


class KafkaTls(Component):
    """stunnel4: TLS (mutual) on the bootstrap address, forwarding to the broker."""

    name = "broker-tls"

    @property
    def address(self) -> str:
        return self.settings.bootstrap_servers.split(",")[0]

    @property
    def directory(self) -> Path:
        return tls_dir(self.settings.local_dir)

    def prepare(self) -> None:
        if self.settings.kafka_security_protocol.startswith("SASL_"):
            raise self.fail("the local broker (Tansu 0.6) cannot authenticate SASL clients: use "
                            "FISCALFLOW_KAFKA_SECURITY_PROTOCOL=SSL locally (SASL is for a real cluster)")
        ensure_certificates(self.directory)
        host, port = split_hostport(self.address)
        d = self.directory
        (d / "stunnel.conf").write_text("\n".join([
            "foreground = yes", "pid =", "debug = 4", "",
            "[kafka]", f"accept = {host}:{port}", f"connect = {backend_address(self.settings)}",
            f"cert = {d / 'server.crt'}", f"key = {d / 'server.key'}", f"CAfile = {d / 'ca.crt'}",
            "requireCert = yes", "verifyChain = yes", "sslVersionMin = TLSv1.2", "",
        ]))

    def launch(self) -> ProcessRecord:
        stunnel = ensure_debian_package("stunnel4", "stunnel4")
        return self.spawn_record([stunnel, str(self.directory / "stunnel.conf")])

    def wait_ready(self, record: ProcessRecord, timeout_s: float) -> None:
        host, port = split_hostport(self.address)
        self.wait_until(record, lambda: port_open(host, port), timeout_s, f"TLS listener on {self.address}")
