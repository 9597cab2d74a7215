"""Every setting, declared once: type, default, and the environment variable that sets it.

All variables are ``FISCALFLOW_<NAME>``; the README's configuration table is generated from
this class (``fiscalflow config --markdown``).  Secrets may also come from files:
``FISCALFLOW_<NAME>_FILE`` names a file whose content is the value.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.domain.records import S3_REGION
from shared.topics import Stage, TopicSpec, all_topics

PROJECT_ROOT = Path(__file__).resolve().parent.parent


# Tokens written in this repository (the Settings default, the demo stacks): fine on loopback,
# refused by a service that listens beyond it (Settings.exposed_secret_problems).
PUBLISHED_TOKENS = frozenset({"fiscalflow-dev-token", "fiscalflow-demo-token", "fiscalflow-dev-read-token",
                              "fiscalflow-demo-read-token"})
LOCAL_S3_SECRET = "fiscalflow-local-secret"  # the local stack's, the default when none is set
MIN_SECRET_CHARS = 24


# The secrets each stage uses, checked at its start (and mounted by the chart): the HTTP APIs'
# tokens, the job callbacks' key, the S3 keys (claim checks, the archive, rebuilds).
SECRETS_OF_STAGE: dict[Stage, frozenset[str]] = {
    Stage.INGEST: frozenset({"tokens", "s3"}),  # s3: source: s3 jobs list the S3 source bucket
    Stage.DOWNLOAD: frozenset({"s3"}),
    Stage.VALIDATE: frozenset({"s3"}),
    Stage.STORE: frozenset({"s3"}),
    Stage.REPORT: frozenset({"tokens", "callback", "s3"}),
}


def _published(value: str, published: Iterable[str]) -> bool:
    """Whether a secret is one of these (compared in constant time, as every secret is)."""
    return any(hmac.compare_digest(value.encode(), p.encode()) for p in published)


def _networks(text: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(n.strip(), strict=False) for n in text.split(",") if n.strip())


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FISCALFLOW_", extra="ignore")

    # --- local stack -------------------------------------------------------------------
    local_dir: Path = Field(PROJECT_ROOT / ".local", description="State, data and logs of the local stack.")

    # --- Kafka ----------------------------------------------------------------------------
    bootstrap_servers: str = Field("127.0.0.1:19092", description="Kafka bootstrap servers.")
    broker_storage: str = Field(
        "memory", description="Local broker storage engine: `memory`, or `s3` (durable, on the local S3)."
    )
    topic_namespace: str = Field(
        "", description="Prefix of the report service's topics and consumer group, for several isolated "
        "pipelines on one broker (tests). Empty in production."
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="How every Kafka client connects: `PLAINTEXT`, `SSL` (TLS), `SASL_PLAINTEXT` or "
        "`SASL_SSL`."
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "SCRAM-SHA-512", description="SASL mechanism (with `SASL_*` protocols): `PLAIN`, `SCRAM-SHA-256` or "
        "`SCRAM-SHA-512`."
    )
    kafka_sasl_username: str = Field("", description="SASL user name.")
    kafka_sasl_password: SecretStr = Field(SecretStr(""), description="SASL password (or `_FILE`).")
    kafka_ssl_ca_location: str = Field(
        "", description="PEM file of the CA(s) that sign the brokers' certificates; empty: the system's CAs."
    )
    kafka_ssl_certificate_location: str = Field("", description="Client certificate (PEM) for mutual TLS.")
    kafka_ssl_key_location: str = Field("", description="Client private key (PEM) for mutual TLS.")
    kafka_ssl_key_password: SecretStr = Field(
        SecretStr(""), description="Password of the client private key (or `_FILE`)."
    )
    kafka_ssl_check_hostname: bool = Field(
        True, description="Check that the broker's certificate names the host connected to (keep it on)."
    )
    partitions_ingest: int = Field(4, ge=1, description="Partitions of the ingest topics.")
    partitions_download: int = Field(6, ge=1, description="Partitions of the download topics.")
    partitions_validate: int = Field(4, ge=1, description="Partitions of the validate topics.")
    partitions_store: int = Field(4, ge=1, description="Partitions of the store topics.")
    partitions_report: int = Field(2, ge=1, description="Partitions of fiscal.stored and fiscal.stored.priority "
                                   "(report input).")
    partitions_shared: int = Field(2, ge=1, description="Partitions of the dead-letter and parking topics.")
    partitions_side_lanes: int = Field(
        1, ge=1, description="Partitions of each stage's priority and retry topics (at most the stage's own). "
        "Their records are few, yet every partition a consumer holds is in each of its fetches (one every "
        "FISCALFLOW_FETCH_WAIT_MAX_MS, data or not): the broker's largest cost (decision 0039). Raise it when one "
        "replica cannot keep up with a lane.")
    session_timeout_ms: int = Field(
        6000, description="Consumer session timeout; the local broker's JoinGroup waits half of it."
    )
    max_poll_interval_ms: int = Field(
        300_000, ge=1000, description="How long a consumer may go without polling before it leaves its group. A "
        "stage that cannot take work (paused, halted, every slot or the byte budget taken) pauses its "
        "partitions after a fifth of it (at most 10 s) and then polls every second, so it stays in the group."
    )
    fetch_wait_max_ms: int = Field(20, description="Max fetch wait; the local broker's latency floor is half.")
    producer_linger_ms: int = Field(
        5, ge=0, description="Producer linger: how long records wait to share a batch. The local durable broker "
        "(`s3` storage) pays ~4 ms CPU per batch, so 100 there (decision 0008, "
        "docs/decisions/0008-durable-broker-batches.md)."
    )
    commit_interval_ms: int = Field(
        250, ge=10, description="How often a stage commits its consumed offsets (each commit is a write per "
        "partition on the broker; a crash redelivers at most this much, handled idempotently)."
    )
    message_max_bytes: int = Field(
        1_000_000, ge=4096, description="Largest Kafka message (value + key + headers): set as the producers' "
        "`message.max.bytes` and every topic's `max.message.bytes`. A document travels inline only while its "
        "message stays under 90 % of it; a larger one travels as an S3 claim check."
    )

    # --- stage runtime ----------------------------------------------------------------------
    max_in_flight: int = Field(256, ge=1, description="Max messages in flight per process.")
    max_in_flight_bytes: int = Field(
        64 * 1024 * 1024, ge=1, description="Bytes of documents the messages in flight of one process may hold "
        "at once: their own bytes and what a handler reads (the download stage's files, claim checks). A message "
        "waits for room; the priority lane does not. At least twice `max_document_bytes`.")
    download_max_in_flight: int = Field(
        256, ge=1, description="Max download tasks in flight per process, at most what the SFTP pools serve at "
        "once (regions × connections × channels × requests per channel). Issuers slow to serve a file need more "
        "(about files/s × seconds per file; their bytes stay bounded by `max_in_flight_bytes`), but the priority "
        "lane then waits behind more work (docs/decisions/0026-byte-budget.md).")
    download_look_ahead: int = Field(
        0, ge=0, description="Download tasks a replica may hold waiting, past those in flight, to find other "
        "regions' records when a long run of one region's has every slot: each region then gets its share of "
        "`download_max_in_flight` (20000 for jobs that each list one slow region). About 1 KB of memory each; a "
        "crash redelivers them (downloaded again, idempotently); they wait while priority records flow. 0: read "
        "no further than the slots (docs/decisions/0028-fair-download-by-region.md).")
    gc_young_threshold: int = Field(
        20_000, ge=700, description="Container objects a service process may allocate, net of those freed, before "
        "Python's garbage collector examines its youngest generation (the interpreter's default, 700, is the "
        "least). A stage keeps hundreds of messages' objects alive at once, so at 700 the collector ran every "
        "~10 messages and re-examined those in flight each time: 7.3 % of the store stage's CPU and 3-5 % of the "
        "download, ingest and report stages'. Cyclic garbage waits that much longer to be freed "
        "(docs/decisions/0034-a-young-generation-of-20000.md).")
    retry_max_attempts: int = Field(6, ge=1, description="Attempts before RETRIES_EXHAUSTED.")
    retry_base_ms: int = Field(500, ge=1, description="First retry delay; doubles each attempt, with jitter.")
    retry_max_ms: int = Field(30_000, ge=1, description="Cap of one retry delay.")
    breaker_failure_threshold: int = Field(5, ge=1, description="Consecutive transient failures that open a breaker.")
    breaker_reset_s: float = Field(2.0, gt=0, description="Seconds an open breaker waits before a half-open probe.")
    reject_ratio_threshold: float = Field(
        0.5, ge=0, le=1, description="Halt a stage when this share of its recent messages became dead letters "
        "(0 disables)."
    )
    reject_ratio_window: int = Field(200, ge=10, description="Recent messages the reject ratio is measured over.")
    redrive_lease_s: float = Field(
        600.0, gt=0, description="A record not in a final state whose last transition is older than this is "
        "stalled (its messages may have been lost): a job that contains it, the reconciler or `fiscalflow records "
        "redrive` re-drive it from download. Longer than the longest wait in a stage's backlog, or healthy records "
        "get a (harmless, wasted) second pass."
    )
    redrive_interval_s: float = Field(
        60.0, ge=0, description="How often the ingest stage's reconciler looks for stalled records (0: never)."
    )
    redrive_max: int = Field(
        5, ge=1, description="Re-drives of one record before it is rejected as REDRIVE_EXHAUSTED (a record that "
        "stalls again and again needs a person, not a loop)."
    )
    shutdown_grace_s: float = Field(20.0, gt=0, description="Seconds to drain in-flight work on SIGTERM.")
    http_host: str = Field("127.0.0.1", description="Bind address of every service's HTTP port.")
    metrics_port: int = Field(0, description="Port of /metrics, /healthz, /readyz (0: pick a free port).")

    # --- PostgreSQL ---------------------------------------------------------------------------
    pg_dsn: SecretStr = Field(
        SecretStr("postgresql://postgres@127.0.0.1:5432/fiscalflow"),
        description="PostgreSQL DSN. Each service's connections name themselves "
        "`fiscalflow-<service>/<replica>` (`application_name`, seen in `pg_stat_activity`) unless the DSN "
        "sets its own `?application_name=`."
    )
    pg_pool_size: int = Field(8, ge=1, description="asyncpg pool size per process.")

    # --- S3 -----------------------------------------------------------------------------------
    s3_endpoint: str = Field("http://127.0.0.1:18333", description="S3 endpoint URL.")
    s3_region: str = Field("us-east-1", description="S3 region.")
    s3_bucket: str = Field("fiscalflow", description="Archive bucket.")
    s3_source_bucket: str = Field(
        "fiscalflow-inbox", min_length=3, max_length=63, description="Bucket of seed 000's `source: s3` jobs: the "
        "objects under a job's prefix become records of region `s3` (object key = remote path), downloaded "
        "from it with the S3 credentials above.")
    s3_access_key: SecretStr = Field(SecretStr("fiscalflow"), description="S3 access key id.")
    s3_secret_key: SecretStr = Field(SecretStr(LOCAL_S3_SECRET), description="S3 secret key.")
    s3_credentials: Literal["static", "chain"] = Field(
        "static", description="`static`: the S3 access and secret keys above. `chain`: botocore's credential chain "
        "(AWS_* environment with session token, profile, web identity as IRSA, container and instance roles), "
        "refreshed before expiry; the keys above are then unused."
    )

    # --- SFTP issuers -------------------------------------------------------------------------
    sftp_regions: str = Field(
        "north=127.0.0.1:12201,central=127.0.0.1:12202,south=127.0.0.1:12203",
        description="Regional issuer SFTP servers: `name=host:port,...`.",
    )
    sftp_user: str = Field("fiscalflow", description="SFTP user name.")
    sftp_key: Path | None = Field(None, description="SFTP client private key (default: the local stack's).")
    sftp_known_hosts: Path | None = Field(None, description="known_hosts verified by every SFTP client.")
    sftp_max_connections: int = Field(10, ge=1, description=(
        "Max connections per regional server. The download replicas share them: each takes its share "
        "of the download topic's partitions of them, at least one. Idle connections close after 30 s."))
    sftp_channels_per_connection: int = Field(
        4, ge=1, description="SFTP channels per connection (a server serves one request at a time per channel)."
    )
    sftp_requests_per_connection: int = Field(8, ge=1, description="Concurrent file requests per SFTP channel.")
    sftp_server_latency_ms: int = Field(
        0, ge=0, description="Local stack only: > 0 makes each region a slow issuer: sshd taking this long to open "
        "each document (`tooling/stack/slow_open.c`).")
    sftp_server_max_connections: int = Field(
        10, ge=1, description="Local stack only: connections a slow issuer accepts (more are dropped).")
    max_document_bytes: int = Field(
        5 * 1024 * 1024, ge=1024, description="Largest document accepted; a larger one is a `DOCUMENT_TOO_LARGE` "
        "dead letter (found while downloading, never read past the limit)."
    )
    gzip_level: int = Field(
        3, ge=0, le=3, description="gzip level of archived documents, ISA-L's: 0 (fastest) to 3 (usually the "
        "smallest); a re-upload of another level is still the same document: sameness is the document's sha256."
    )

    # --- validation ---------------------------------------------------------------------------
    trust_ca: str = Field(
        "", description="Extra trusted CA certificates: paths (file, dir or .zip) separated by `:`."
    )
    stamp_certs: str = Field("", description="Directory of stamping (TFD) certificates named by number.")
    schema_cache_dir: str = Field(
        "", description="Where the validator keeps its prepared XML schema between processes (a private "
        "directory; one not private to this user is ignored); empty: `$XDG_CACHE_HOME/fiscalflow` or "
        "`~/.cache/fiscalflow`; `off`: prepare it in every process."
    )

    # --- ClickHouse / report ------------------------------------------------------------------
    clickhouse_url: SecretStr = Field(
        SecretStr(""), description="ClickHouse: `chdb://DIR` (default: local dir) or http(s) URL, credentials "
        "included (a secret: also `_FILE`, never printed)."
    )

    # --- HTTP APIs ----------------------------------------------------------------------------
    api_token: SecretStr = Field(
        SecretStr("fiscalflow-dev-token"), description="Admin token: submit jobs, replay, rebuild; it also reads."
    )
    read_token: SecretStr = Field(
        SecretStr("fiscalflow-dev-read-token"), description="Read token: reports, records and job views of both "
        "APIs (the admin token reads too)."
    )
    ingest_port: int = Field(18080, description="Port of the ingest HTTP API.")
    report_port: int = Field(18081, description="Port of the report HTTP API.")
    priority_share: float = Field(
        0.10, gt=0, le=1, description="Share of the pipeline's capacity priority jobs may take: the ingest API "
        "refuses a priority job that would take the priority records admitted over the window past this share of "
        "the records the pipeline finishes per second (measured over the last five minutes) with 429 and "
        "Retry-After. Normal jobs are not counted nor refused."
    )
    priority_window_s: float = Field(
        60.0, gt=0, description="Seconds the priority share is counted over: a priority job counts for this long, "
        "or for as long as the share takes to finish it when it is bigger than the window's share (it is then "
        "admitted only when no other priority job counts)."
    )
    priority_capacity_floor_per_s: float = Field(
        100.0, gt=0, description="Records per second the priority share is taken of at least: the capacity "
        "assumed when too few records finished in the last five minutes to measure one (an idle pipeline) or "
        "the measured rate is lower."
    )
    report_batch_size: int = Field(
        2000, ge=1, description="Most stored events the report service writes to ClickHouse in one batch."
    )
    report_flush_s: float = Field(
        2.0, gt=0, description="Longest the report service waits to fill a batch before writing it: how far "
        "the reports may trail the records. Each write costs ClickHouse a fixed ~45 ms of CPU whatever its "
        "size (decision 0031), so a longer wait is cheaper under load."
    )
    callback_secret: SecretStr = Field(
        SecretStr(""), description="HMAC-SHA256 key of the job callbacks' `X-Fiscalflow-Signature`; empty: "
        "the API token (then every receiver holds the admin token: set one)."
    )
    callback_allow_http: bool = Field(
        False, description="Allow `http://` job callback URLs (default: https only)."
    )
    callback_allowed_hosts: str = Field(
        "", description="Hosts job callbacks may go to, separated by commas (`hooks.example.com`, or "
        "`*.example.com` for its subdomains); empty: any host whose every address is public."
    )
    callback_allowed_networks: str = Field(
        "", description="Networks (CIDR, separated by commas) a job callback may reach although they are "
        "loopback, private or link-local: refused otherwise, at submission and before each delivery. The "
        "local stack allows loopback."
    )
    callback_attempts: int = Field(8, ge=1, description="Deliveries of a job callback before it is given up.")
    callback_base_s: float = Field(0.5, gt=0, description="Delay before a callback's second attempt; doubles "
                                   "per attempt.")
    callback_max_s: float = Field(60.0, gt=0, description="Longest delay between two attempts of a callback.")
    report_verify_days: int = Field(
        0, ge=0, description="Days of Fecha back from today that the report service checks against PostgreSQL "
        "at start and periodically (0: every day; the check is one aggregate query per side)."
    )
    report_verify_interval_s: float = Field(
        300.0, ge=0, description="Seconds between the report service's consistency checks (0: only at start)."
    )
    report_verify_settle_s: float = Field(
        60.0, ge=0, le=86400, description="Records archived or rejected this recently are left out of a "
        "consistency check (still in flight to the report): the check does not fire under normal load."
    )

    # --- identity -------------------------------------------------------------------------------
    replica_id: str = Field(
        "0", description="This replica's id, in audit events' actor and in Kafka client ids: set by the local "
        "stack's supervisor, or by the orchestrator (e.g. the pod name)."
    )

    # --- observability ------------------------------------------------------------------------
    otlp_endpoint: str = Field("", description="OTLP/HTTP traces endpoint; empty: no export.")
    log_level: str = Field("INFO", description="Log level.")

    @field_validator("sftp_regions")
    @classmethod
    def _no_s3_region(cls, value: str) -> str:
        names = {item.partition("=")[0].strip() for item in value.split(",")}
        if S3_REGION in names:
            raise ValueError(f"{S3_REGION!r} is the region of S3-sourced records (source: s3); name the SFTP "
                             "region otherwise")
        return value

    @field_validator("callback_allowed_networks")
    @classmethod
    def _networks(cls, value: str) -> str:
        """A typo in the egress policy fails the start, not every job with a callback."""
        _networks(value)  # ValueError: pydantic names the setting
        return value

    @model_validator(mode="before")
    @classmethod
    def _secret_files(cls, data: Any) -> Any:
        """``FISCALFLOW_<NAME>_FILE`` supplies a secret from a file (Kubernetes secret mounts)."""
        if not isinstance(data, dict):
            return data
        for name in ("pg_dsn", "s3_access_key", "s3_secret_key", "api_token", "read_token", "callback_secret",
                     "kafka_sasl_password", "kafka_ssl_key_password", "clickhouse_url"):
            path = os.environ.get(f"FISCALFLOW_{name.upper()}_FILE")
            if path and name not in data:
                data[name] = Path(path).read_text().strip()
        return data

    @model_validator(mode="after")
    def _poll_interval_holds_a_session(self) -> Settings:
        if self.max_poll_interval_ms < self.session_timeout_ms:  # librdkafka refuses the consumer
            raise ValueError(f"max_poll_interval_ms ({self.max_poll_interval_ms}) must be at least "
                             f"session_timeout_ms ({self.session_timeout_ms})")
        return self

    @model_validator(mode="after")
    def _budget_holds_a_document(self) -> Settings:
        # Room for the largest document besides the small holds of messages waiting to read theirs.
        if self.max_in_flight_bytes < 2 * self.max_document_bytes:
            raise ValueError(f"max_in_flight_bytes ({self.max_in_flight_bytes}) must be at least twice "
                             f"max_document_bytes ({self.max_document_bytes})")
        return self

    # --- derived ------------------------------------------------------------------------------
    def binds_loopback(self) -> bool:
        """Whether every HTTP port of a service listens on this machine only."""
        if self.http_host.lower() == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.http_host).is_loopback
        except ValueError:
            return False

    def exposed_secret_problems(self, stage: Stage | None = None) -> list[str]:
        """Why these settings must not serve beyond loopback: a secret that is one of the project's
        published defaults, or too short to resist guessing.  Empty on loopback (the local stack).

        ``stage``: only the secrets that stage uses (the chart mounts each stage its own: the API
        tokens in ingest and report, the callback secret in report, the S3 keys in download,
        validate, store and report); None: all of them."""
        if self.binds_loopback():
            return []
        uses = SECRETS_OF_STAGE[stage] if stage is not None else frozenset({"tokens", "callback", "s3"})
        secrets: dict[str, str] = {}
        if "tokens" in uses:
            secrets |= {"api_token": self.api_token.get_secret_value(),
                        "read_token": self.read_token.get_secret_value()}
        if "callback" in uses and (callback := self.callback_secret.get_secret_value()):
            secrets["callback_secret"] = callback  # unset: the API token signs callbacks
        problems = [f"{name} is a published default or shorter than {MIN_SECRET_CHARS} characters"
                    for name, value in secrets.items()
                    if _published(value, PUBLISHED_TOKENS) or len(value) < MIN_SECRET_CHARS]
        if "tokens" in uses and hmac.compare_digest(secrets["api_token"].encode(), secrets["read_token"].encode()):
            problems.append("read_token equals api_token (every reader could submit and replay)")
        if ("s3" in uses and self.s3_credentials == "static"
                and _published(self.s3_secret_key.get_secret_value(), {LOCAL_S3_SECRET})):
            problems.append("s3_secret_key is unset (the local stack's default)")
        return problems

    def callback_hosts(self) -> tuple[str, ...]:
        """``callback_allowed_hosts``, lower case."""
        return tuple(h.strip().lower() for h in self.callback_allowed_hosts.split(",") if h.strip())

    def callback_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """``callback_allowed_networks``, parsed (checked when the settings are read)."""
        return _networks(self.callback_allowed_networks)

    def partitions(self) -> dict[Stage, int]:
        return {
            Stage.INGEST: self.partitions_ingest,
            Stage.DOWNLOAD: self.partitions_download,
            Stage.VALIDATE: self.partitions_validate,
            Stage.STORE: self.partitions_store,
            Stage.REPORT: self.partitions_report,
        }

    def topics(self) -> list[TopicSpec]:
        """Every topic of the pipeline with the partitions these settings give it."""
        return all_topics(self.partitions(), self.partitions_shared, self.partitions_side_lanes)

    def regions(self) -> dict[str, tuple[str, int]]:
        out: dict[str, tuple[str, int]] = {}
        for item in filter(None, (p.strip() for p in self.sftp_regions.split(","))):
            name, _, addr = item.partition("=")
            host, _, port = addr.rpartition(":")
            out[name.strip()] = (host, int(port))
        return out

    def schema_cache_path(self) -> Path | None:
        """The validator's schema cache directory (``schema_cache_dir``), None when off or homeless."""
        if self.schema_cache_dir == "off":
            return None
        if self.schema_cache_dir:
            return Path(self.schema_cache_dir)
        base = os.environ.get("XDG_CACHE_HOME", "")
        try:
            root = Path(base) if os.path.isabs(base) else Path.home() / ".cache"
        except RuntimeError:  # no home directory
            return None
        return root / "fiscalflow"

    def sftp_key_path(self) -> Path:
        return self.sftp_key or self.local_dir / "sftp" / "client_key"

    def known_hosts_path(self) -> Path:
        return self.sftp_known_hosts or self.local_dir / "sftp" / "known_hosts"

    def region_root(self, region: str) -> Path:
        """Directory served as the SFTP root of a regional issuer in the local stack."""
        return self.local_dir / "sftp" / "regions" / region

    def pki_dir(self) -> Path:
        """Demo PKI of the local stack: CA, issuer CSDs, stamping certificate."""
        return self.local_dir / "pki"

    def clickhouse_dsn(self) -> str:
        return self.clickhouse_url.get_secret_value() or f"chdb://{self.local_dir / 'clickhouse'}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
