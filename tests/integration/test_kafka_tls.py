"""Kafka over TLS for real: the local broker behind stunnel4 (mutual TLS), reached by the same
client-config builder every service uses.  A throwaway broker in its own local dir and port."""

from __future__ import annotations

import shutil
import socket
import ssl
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from shared.runtime.admin import ensure_topics
from shared.runtime.kafka import client_config, ssl_context
from shared.settings import PROJECT_ROOT, Settings
from shared.topics import TopicSpec
from tests.integration.conftest import SLOT_OFFSET
from tooling.stack import LocalStack
from tooling.stack.kafka_tls import tls_settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tls_stack(stack_settings: Settings) -> Iterator[Settings]:
    local = PROJECT_ROOT / f".local-test-tls{SLOT_OFFSET}"
    shutil.rmtree(local, ignore_errors=True)
    settings = stack_settings.model_copy(update={
        "local_dir": local, "bootstrap_servers": f"127.0.0.1:{29095 + SLOT_OFFSET}", **tls_settings(local)})
    stack = LocalStack(settings)
    try:
        stack.start("broker")  # starts the TLS listener first
        yield settings
    finally:
        stack.down()
        shutil.rmtree(local, ignore_errors=True)


def _metadata(conf: dict[str, Any]) -> Any:
    return AdminClient({**conf, "log_level": 0}).list_topics(timeout=4)


def test_records_go_through_tls_and_every_other_client_is_refused(tls_stack: Settings) -> None:
    topic = "tls-roundtrip"
    ensure_topics(tls_stack, [TopicSpec(topic, 2)])
    conf = client_config(tls_stack)
    assert conf["security.protocol"] == "ssl" and conf["ssl.endpoint.identification.algorithm"] == "https"
    producer = Producer(conf)
    for i in range(20):
        producer.produce(topic, key=f"k{i}", value=f"v{i}")
    assert producer.flush(15) == 0
    consumer = Consumer({**conf, "group.id": "tls-reader", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, 0) for p in (0, 1)])
    seen = set()
    for _ in range(100):
        msg = consumer.poll(0.2)
        if msg is not None and not msg.error():
            seen.add(msg.value())
        if len(seen) == 20:
            break
    consumer.close()
    assert seen == {f"v{i}".encode() for i in range(20)}

    # The broker advertises the TLS address only: metadata names it, nothing plaintext.
    brokers = _metadata(conf).brokers
    assert [f"{b.host}:{b.port}" for b in brokers.values()] == [tls_stack.bootstrap_servers]

    refused = {
        "plaintext": {"bootstrap.servers": tls_stack.bootstrap_servers},
        "no client certificate": {k: v for k, v in conf.items() if not k.startswith(("ssl.certificate", "ssl.key"))},
        "another CA": {**conf, "ssl.ca.location": "/etc/ssl/certs/ca-certificates.crt"},
    }
    reached = []
    for why, bad in refused.items():
        try:
            _metadata(bad)
            reached.append(why)
        except KafkaException:
            pass
    assert reached == [], f"clients the TLS listener should refuse got metadata: {reached}"


def test_the_python_tls_context_verifies_the_broker(tls_stack: Settings) -> None:
    """The report service's aiokafka client gets its TLS context from the same settings."""
    ctx = ssl_context(tls_stack)
    assert ctx is not None and ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED
    host, port = tls_stack.bootstrap_servers.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname=host) as tls:
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
        assert ("IP Address", "127.0.0.1") in tls.getpeercert()["subjectAltName"]
    # A context that trusts another CA refuses the broker's certificate.
    other = ssl.create_default_context()
    with socket.create_connection((host, int(port)), timeout=5) as raw, pytest.raises(ssl.SSLCertVerificationError):
        other.wrap_socket(raw, server_hostname=host)
