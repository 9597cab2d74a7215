"""The Kafka security settings reach every client through one builder.  TLS is tested for real
(tests/integration/test_kafka_tls.py, the e2e pipeline); SASL only here, by configuration: the
local broker (Tansu 0.6) cannot authenticate SASL clients."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from services.report.app import broker_credentials
from shared.runtime.kafka import client_config, consumer_config, producer_config, ssl_context
from shared.settings import PROJECT_ROOT, Settings


@pytest.fixture(autouse=True)
def _no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The defaults, not a test session's exported stack settings."""
    for name in [n for n in os.environ if n.startswith("FISCALFLOW_")]:
        monkeypatch.delenv(name)


def test_plaintext_is_the_default_and_carries_no_security_keys() -> None:
    conf = client_config(Settings())
    assert conf == {"bootstrap.servers": "127.0.0.1:19092", "security.protocol": "plaintext"}
    assert ssl_context(Settings()) is None and broker_credentials(Settings()) is None


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_ssl_settings_become_librdkafka_and_aiokafka_options(mechanism: str, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "kafka-password"
    secret.write_text("s3cret-from-a-mounted-file\n")
    monkeypatch.setenv("FISCALFLOW_KAFKA_SASL_PASSWORD_FILE", str(secret))
    s = Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism=mechanism,  # type: ignore[arg-type]
                 kafka_sasl_username="fiscalflow", bootstrap_servers="b-1.kafka.example:9096")
    conf = client_config(s)
    assert conf == {"bootstrap.servers": "b-1.kafka.example:9096", "security.protocol": "sasl_ssl",
                    "sasl.mechanism": mechanism, "sasl.username": "fiscalflow",
                    "sasl.password": "s3cret-from-a-mounted-file", "ssl.endpoint.identification.algorithm": "https"}
    # Every client kind carries them: stage consumers and producers build on the same dict.
    for built in (consumer_config(s, "g", "c"), producer_config(s, "p")):
        assert {k: built[k] for k in conf} == conf
    creds = broker_credentials(s)
    assert creds is not None
    assert (creds.protocol.value, creds.mechanism.value, creds.username) == ("SASL_SSL", mechanism, "fiscalflow")
    assert creds.password == "s3cret-from-a-mounted-file" and creds.ssl_context is not None


def test_sasl_plaintext_has_no_tls_and_tls_alone_no_sasl() -> None:
    conf = client_config(Settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_username="u",  # type: ignore[arg-type]
                                  kafka_sasl_password="p"))  # type: ignore[arg-type]
    assert conf["security.protocol"] == "sasl_plaintext" and not any(k.startswith("ssl.") for k in conf)
    tls = client_config(Settings(kafka_security_protocol="SSL", kafka_ssl_ca_location="/ca.pem",  # type: ignore[arg-type]
                                 kafka_ssl_check_hostname=False))
    assert tls["ssl.ca.location"] == "/ca.pem" and tls["ssl.endpoint.identification.algorithm"] == "none"
    assert not any(k.startswith("sasl.") for k in tls)


def test_no_kafka_client_is_configured_outside_the_builder() -> None:
    """Every ``bootstrap.servers`` of the product comes from client_config: a client built
    elsewhere would silently ignore the security settings."""
    offenders = []
    for root in ("shared", "services", "deploy", "tooling"):
        for path in (PROJECT_ROOT / root).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and node.value == "bootstrap.servers":
                    offenders.append(str(path.relative_to(PROJECT_ROOT)))
    assert offenders == ["shared/runtime/kafka.py"]
