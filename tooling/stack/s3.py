"""S3: SeaweedFS ``weed mini`` (master, volume, filer and S3 gateway in one process).

Measured here: ready in ~0.7 s, credentials enforced once an identities file is given,
conditional put (``If-None-Match: *``) answered 412 PreconditionFailed on an existing key, and
Tansu's ``s3://`` storage works on it.  ``weed server -s3`` would be the same pieces in more
flags; ``mini`` is the one the project's measurements were made with.

Identities (``<local_dir>/s3/identities.json``, the file weed reads):
- services: ``Settings.s3_access_key``/``s3_secret_key``, Read/Write/List/Tagging on the archive
  bucket only;
- broker: Read/Write/List on the broker's own bucket only;
- admin: everything, used by the stack to create buckets (and by tests).
Admin and broker secrets are random, generated once and kept (0600).

Ports: weed mini opens nine listeners and its defaults (9333, 8888, gRPC = port + 10000) would
collide between a dev and a test stack, so all of them derive from the S3 port P: master P+1,
volume P+2, filer P+3, admin P+4, and their gRPC ports P+10..P+14.
"""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tooling.stack.component import Component, StackContext, server_threads_env
from tooling.stack.state import ProcessRecord

BROKER_BUCKET = "tansu"


@dataclass(frozen=True)
class S3Identity:
    access_key: str
    secret_key: str


@dataclass(frozen=True)
class S3Identities:
    admin: S3Identity
    broker: S3Identity
    services: S3Identity

    @staticmethod
    def path(ctx: StackContext) -> Path:
        return ctx.root / "s3" / "identities.json"

    @classmethod
    def load(cls, ctx: StackContext) -> S3Identities:
        data = json.loads(cls.path(ctx).read_text())
        found = {i["name"]: S3Identity(i["credentials"][0]["accessKey"], i["credentials"][0]["secretKey"])
                 for i in data["identities"]}
        return cls(admin=found["admin"], broker=found["broker"], services=found["services"])

    @classmethod
    def ensure(cls, ctx: StackContext) -> S3Identities:
        """Write the identities file: random admin/broker secrets kept across runs, the services'
        credentials always those of the current settings."""
        s = ctx.settings
        try:
            old = cls.load(ctx)
            admin, broker = old.admin, old.broker
        except (OSError, ValueError, KeyError):
            admin = S3Identity("fiscalflow-admin", secrets.token_urlsafe(24))
            broker = S3Identity("fiscalflow-broker", secrets.token_urlsafe(24))
        services = S3Identity(s.s3_access_key.get_secret_value(), s.s3_secret_key.get_secret_value())
        bucket = s.s3_bucket

        def identity(name: str, ident: S3Identity, actions: list[str]) -> dict[str, Any]:
            return {"name": name, "credentials": [{"accessKey": ident.access_key, "secretKey": ident.secret_key}],
                    "actions": actions}

        doc = {"identities": [
            identity("admin", admin, ["Admin", "Read", "Write", "List", "Tagging"]),
            identity("broker", broker, [f"{a}:{BROKER_BUCKET}" for a in ("Read", "Write", "List")]),
            # The services read and list the S3 source bucket (source: s3 jobs); they never write it.
            identity("services", services, [f"{a}:{bucket}" for a in ("Read", "Write", "List", "Tagging")]
                     + [f"{a}:{s.s3_source_bucket}" for a in ("Read", "List")]),
        ]}
        path = cls.path(ctx)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(json.dumps(doc, indent=2))
        return cls(admin=admin, broker=broker, services=services)


def s3_client(endpoint: str, region: str, ident: S3Identity) -> Any:
    """A plain botocore client (sync, so callable from inside a running event loop too)."""
    import botocore.session
    from botocore.config import Config

    return botocore.session.get_session().create_client(
        "s3", endpoint_url=endpoint, region_name=region, aws_access_key_id=ident.access_key,
        aws_secret_access_key=ident.secret_key,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2},
                      connect_timeout=2, read_timeout=10))


class S3Server(Component):
    name = "s3"

    @property
    def address(self) -> str:
        return self.settings.s3_endpoint

    def _host_port(self) -> tuple[str, int]:
        parts = urlsplit(self.settings.s3_endpoint)
        return parts.hostname or "127.0.0.1", parts.port or 80

    def prepare(self) -> None:
        (self.ctx.root / "s3" / "data").mkdir(parents=True, exist_ok=True)
        S3Identities.ensure(self.ctx)

    def launch(self) -> ProcessRecord:
        host, p = self._host_port()
        ports = {"s3.port": p, "master.port": p + 1, "volume.port": p + 2, "filer.port": p + 3,
                 "admin.port": p + 4, "s3.port.grpc": p + 10, "master.port.grpc": p + 11,
                 "volume.port.grpc": p + 12, "filer.port.grpc": p + 13, "admin.port.grpc": p + 14}
        argv = [str(self.ctx.venv_bin("weed")), "mini", f"-dir={self.ctx.root / 's3' / 'data'}",
                f"-ip={host}", f"-ip.bind={host}", *(f"-{k}={v}" for k, v in ports.items()),
                "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
                "-master.telemetry=false", f"-s3.config={S3Identities.path(self.ctx)}"]
        return self.spawn_record(argv, self.ctx.child_env(server_threads_env("GOMAXPROCS")))

    def wait_ready(self, record: ProcessRecord, timeout_s: float) -> None:
        def answers() -> bool:
            try:
                urllib.request.urlopen(self.settings.s3_endpoint, timeout=1.0)
            except urllib.error.HTTPError:
                return True  # 403 to an anonymous request: the gateway is up and enforcing
            return True

        self.wait_until(record, answers, timeout_s, f"S3 gateway on {self.address}")
        # The gateway answers before the filer behind it takes writes: wait for a bucket call.
        client = s3_client(self.settings.s3_endpoint, self.settings.s3_region, S3Identities.load(self.ctx).admin)
        self.wait_until(record, lambda: bool(client.list_buckets()), timeout_s, "S3 ListBuckets as admin")

    def after_ready(self) -> None:
        admin = s3_client(self.settings.s3_endpoint, self.settings.s3_region, S3Identities.load(self.ctx).admin)
        existing = {b["Name"] for b in admin.list_buckets().get("Buckets", [])}
        for bucket in (self.settings.s3_bucket, self.settings.s3_source_bucket, BROKER_BUCKET):
            if bucket not in existing:
                admin.create_bucket(Bucket=bucket)
