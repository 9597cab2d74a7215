"""The local stack on real servers: what `fiscalflow stack` promises its users and the chaos suite."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncssh
import botocore.exceptions
import pytest
from confluent_kafka import Consumer, Message, Producer, TopicPartition

from shared.runtime.admin import partition_counts
from shared.runtime.kafka import client_config
from shared.settings import PROJECT_ROOT, Settings
from shared.topics import Stage
from tests.integration.conftest import SLOT_OFFSET as _SLOT_OFFSET
from tooling.stack import ComponentStatus, LocalStack
from tooling.stack.component import port_open, split_hostport, usable_cores
from tooling.stack.process import ProcessHandle, spawn
from tooling.stack.s3 import BROKER_BUCKET, S3Identity, s3_client
from tooling.stack.services import REPLICA_COMMAND_ENV
from tooling.stack.state import ProcessRecord

pytestmark = pytest.mark.integration

FISCALFLOW = str(Path(sys.executable).parent / "fiscalflow")
PROCESS_COMPONENTS = ["s3", "broker", "sftp-north", "sftp-central", "sftp-south"]


@pytest.fixture(scope="module")
def stack(stack_settings: Settings) -> LocalStack:
    return LocalStack(stack_settings)


def _component(stack: LocalStack, name: str) -> ComponentStatus:
    return next(c for c in stack.status().components if c.name == name)


def _cli_status() -> dict[str, dict[str, dict[str, object]]]:
    out = subprocess.run([FISCALFLOW, "stack", "status", "--json"], check=True, capture_output=True, text=True)
    data: dict[str, dict[str, dict[str, object]]] = json.loads(out.stdout)
    return data


def test_status_shows_every_component_running_with_its_pid(stack: LocalStack) -> None:
    status = _cli_status()  # through the CLI: it must find the test stack by environment
    comps = status["components"]
    for name in PROCESS_COMPONENTS:
        assert comps[name]["state"] == "running", name
        pid = comps[name]["pid"]
        assert isinstance(pid, int) and ProcessHandle.of(pid) is not None
    assert comps["broker"]["address"] == stack.settings.bootstrap_servers
    host, port = stack.settings.regions()["north"]
    assert comps["sftp-north"]["address"] == f"{host}:{port}"
    assert comps["postgres"]["state"] == "running"
    assert comps["services"]["state"] == "stopped"
    assert status["replicas"] == {}


def test_the_s3_server_and_the_broker_get_a_quarter_of_the_cores_as_worker_threads(stack: LocalStack) -> None:
    # Beside the busy stages their own thread pools only wake each other across cores (decision 0029).
    comps = _cli_status()["components"]
    for name, var in (("s3", "GOMAXPROCS"), ("broker", "TOKIO_WORKER_THREADS")):
        want = os.environ.get(var) or str(max(1, usable_cores() // 4))  # the environment's value wins
        pid = comps[name]["pid"]
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert f"{var}={want}".encode() in environ, (name, [v for v in environ if v.startswith(var.encode())])


def test_second_up_is_a_no_op(stack: LocalStack) -> None:
    before = {c.name: c.pid for c in stack.status().components}
    t0 = time.monotonic()
    timings = stack.up(services=())
    assert time.monotonic() - t0 < 5
    assert all(seconds == 0 for seconds in timings.values()), timings
    assert {c.name: c.pid for c in stack.status().components} == before


def test_every_topic_has_its_configured_partitions(stack_settings: Settings) -> None:
    counts = partition_counts(stack_settings)
    wanted = stack_settings.topics()
    assert {t.name: counts.get(t.name) for t in wanted} == {t.name: t.partitions for t in wanted}


def test_s3_enforces_credentials_and_conditional_put(stack: LocalStack, unique_name: Callable[[str], str]) -> None:
    s = stack.settings
    services = s3_client(s.s3_endpoint, s.s3_region, stack.s3_identities().services)
    key = unique_name("archive") + ".xml.gz"
    services.put_object(Bucket=s.s3_bucket, Key=key, Body=b"cfdi", IfNoneMatch="*")
    assert services.get_object(Bucket=s.s3_bucket, Key=key)["Body"].read() == b"cfdi"

    # The archive's idempotent write: a second put of the same key is refused, not overwritten.
    with pytest.raises(botocore.exceptions.ClientError) as exc:
        services.put_object(Bucket=s.s3_bucket, Key=key, Body=b"other", IfNoneMatch="*")
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412

    wrong = s3_client(s.s3_endpoint, s.s3_region, S3Identity(s.s3_access_key.get_secret_value(), "wrong-secret"))
    with pytest.raises(botocore.exceptions.ClientError) as exc:
        wrong.get_object(Bucket=s.s3_bucket, Key=key)
    assert exc.value.response["Error"]["Code"] == "SignatureDoesNotMatch"

    # The services' identity is scoped to the archive bucket: the broker's bucket is off limits.
    with pytest.raises(botocore.exceptions.ClientError) as exc:
        services.put_object(Bucket=BROKER_BUCKET, Key=key, Body=b"x")
    assert exc.value.response["Error"]["Code"] == "AccessDenied"


async def test_sftp_clients_verify_the_region_host_keys(stack_settings: Settings) -> None:
    s = stack_settings
    (s.region_root("north") / "inbox").mkdir(exist_ok=True)
    (s.region_root("north") / "inbox" / "a.xml").write_text("<cfdi/>")
    host, port = s.regions()["north"]
    key = str(s.sftp_key_path())
    async with asyncssh.connect(host, port, username=s.sftp_user, client_keys=[key],
                                known_hosts=str(s.known_hosts_path())) as conn, conn.start_sftp_client() as sftp:
        assert "a.xml" in await sftp.listdir("inbox")

    # North presenting central's key (a man in the middle, as far as the client knows): refused.
    lines = s.known_hosts_path().read_text().splitlines()
    north_key = next(line for line in lines if line.startswith(f"[{host}]:{port} "))
    central_host, central_port = s.regions()["central"]
    central_key = next(line for line in lines if line.startswith(f"[{central_host}]:{central_port} "))
    forged = asyncssh.import_known_hosts(f"[{host}]:{port} " + central_key.split(" ", 1)[1] + "\n")
    assert north_key != central_key
    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        await asyncssh.connect(host, port, username=s.sftp_user, client_keys=[key], known_hosts=forged)

    # Key-only: without the client key there is no way in.
    with pytest.raises(asyncssh.PermissionDenied):
        await asyncssh.connect(host, port, username=s.sftp_user, client_keys=None, password="fiscalflow",
                               known_hosts=str(s.known_hosts_path()), agent_path=None)


async def test_a_slow_region_takes_its_delay_per_document_per_channel_and_drops_surplus_connections(
        stack_settings: Settings) -> None:
    """The seed scenario's issuer: sshd with slow_open.c (each document 400 ms to open, one request at
    a time per channel, channels of a connection in parallel, at most 2 connections)."""
    s = stack_settings
    slow = s.model_copy(update={"sftp_server_latency_ms": 400, "sftp_server_max_connections": 2})
    inbox = s.region_root("south") / "slow"
    inbox.mkdir(exist_ok=True)
    for i in range(4):
        (inbox / f"d{i}.xml").write_text(f"<d{i}/>")
    (inbox / "listing.txt").write_text("not a document")
    host, port = s.regions()["south"]

    async def connect() -> asyncssh.SSHClientConnection:
        return await asyncssh.connect(host, port, username=s.sftp_user, client_keys=[str(s.sftp_key_path())],
                                      known_hosts=str(s.known_hosts_path()))

    async def read(sftp: asyncssh.SFTPClient, name: str) -> bytes:
        async with sftp.open(f"slow/{name}", "rb") as f:
            return bytes(await f.read())

    LocalStack(slow).restart("sftp-south")
    try:
        first, second = await connect(), await connect()
        with pytest.raises((ConnectionError, asyncssh.Error)):  # a third: the busy issuer drops it
            await connect()
        channels = [await first.start_sftp_client() for _ in range(4)]
        t0 = time.monotonic()
        assert await read(channels[0], "listing.txt") == b"not a document"
        not_a_document = time.monotonic() - t0
        t0 = time.monotonic()
        assert [await read(channels[0], f"d{i}.xml") for i in range(2)] == [b"<d0/>", b"<d1/>"]
        one_channel = time.monotonic() - t0
        t0 = time.monotonic()
        got = await asyncio.gather(*(read(channels[i], f"d{i}.xml") for i in range(4)))
        four_channels = time.monotonic() - t0
        assert got == [f"<d{i}/>".encode() for i in range(4)]
        assert not_a_document < 0.4 <= one_channel / 2  # documents only, each its full delay
        assert four_channels < 2 * 0.4 <= one_channel  # the channels served side by side
        second.close()
        await second.wait_closed()
        deadline = time.monotonic() + 20
        while True:  # room again once the issuer has reaped the closed connection's process
            try:
                third = await connect()
                break
            except (ConnectionError, asyncssh.Error):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
        third.close()
        first.close()
    finally:
        LocalStack(s).restart("sftp-south")


def test_a_region_can_go_down_and_come_back(stack: LocalStack) -> None:
    host, port = stack.settings.regions()["north"]
    old_pid = _component(stack, "sftp-north").pid
    stack.stop("sftp-north")
    assert not port_open(host, port)
    assert {c.name: c.state for c in stack.status().components}["sftp-north"] == "stopped"
    stack.start("sftp-north")
    north = _component(stack, "sftp-north")
    assert north.state == "running" and north.pid != old_pid
    assert port_open(host, port)


def test_up_after_sigkill_restarts_what_died(stack: LocalStack) -> None:
    victims = ["sftp-central", "sftp-south"]
    before = {c.name: c.pid for c in stack.status().components}
    for name in victims:
        pid = before[name]
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)
    states = {c.name: c.state for c in stack.status().components}
    assert [states[n] for n in victims] == ["dead", "dead"]
    timings = stack.up(services=())
    after = {c.name: c for c in stack.status().components}
    for name in victims:
        assert after[name].state == "running" and after[name].pid != before[name]
        assert timings[name] > 0
    assert after["broker"].pid == before["broker"]  # the living were left alone


def test_stop_never_kills_a_recycled_pid(tmp_path: Path, stack_settings: Settings) -> None:
    """A state file pointing at a pid that now belongs to someone else: down must spare it."""
    bystander = spawn(["sleep", "60"], tmp_path / "sleep.log")
    try:
        settings = stack_settings.model_copy(update={"local_dir": tmp_path / "stack"})
        stack = LocalStack(settings)
        with stack.state.transaction() as state:
            state.components["broker"] = ProcessRecord(address="x", pid=bystander.pid,
                                                       start_ticks=bystander.start_ticks - 1)
        assert {c.name: c.state for c in stack.status().components}["broker"] == "dead"
        stack.down()
        assert bystander.is_alive()
    finally:
        bystander.stop(grace_s=1)


REPLICA_STANDIN = """
import json, os, pathlib, signal, sys, time
stage, n = sys.argv[-1], os.environ["FISCALFLOW_REPLICA_ID"]
run = pathlib.Path(os.environ["FISCALFLOW_LOCAL_DIR"]) / "run"
run.mkdir(parents=True, exist_ok=True)
(run / f"{stage}-{n}.json").write_text(json.dumps({"pid": os.getpid(), "ops": "http://127.0.0.1:0"}))
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
while True:
    time.sleep(1)
"""


@pytest.fixture
def standin_replicas(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    script = tmp_path / "replica.py"
    script.write_text(REPLICA_STANDIN)
    monkeypatch.setenv(REPLICA_COMMAND_ENV, f"{sys.executable} {script}")
    yield


def test_supervisor_restarts_a_killed_replica(stack: LocalStack, standin_replicas: None) -> None:
    try:
        stack.up(services=[Stage.INGEST, Stage.VALIDATE], replicas={"validate": 2}, timeout_s=30)
        assert len(stack.replica_pids(Stage.INGEST)) == 1
        victims = stack.replica_pids(Stage.VALIDATE)
        assert len(victims) == 2
        os.kill(victims[0], signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pids = stack.replica_pids(Stage.VALIDATE)
            if len(pids) == 2 and victims[0] not in pids:
                break
            time.sleep(0.1)
        assert victims[1] in pids and victims[0] not in pids and len(pids) == 2
        replicas = {r.name: r for r in stack.status().replicas}
        assert replicas["validate-0"].restarts == 1 and replicas["validate-0"].state == "running"
    finally:
        stack.stop("services")
    assert stack.replica_pids(Stage.VALIDATE) == [] and stack.replica_pids(Stage.INGEST) == []
    stack.up(services=())


def _produce_and_commit(settings: Settings, topic: str, group: str) -> None:
    from shared.runtime.admin import ensure_topics
    from shared.topics import TopicSpec

    ensure_topics(settings, [TopicSpec(topic, 2)])
    producer = Producer(client_config(settings))
    for i in range(10):
        producer.produce(topic, key=f"k{i}", value=f"v{i}", partition=i % 2)
    assert producer.flush(10) == 0
    consumer = Consumer({**client_config(settings), "group.id": group, "auto.offset.reset": "earliest",
                         "enable.auto.commit": False, "session.timeout.ms": 6000})
    consumer.assign([TopicPartition(topic, 0, 0)])
    seen: list[Message] = []
    deadline = time.monotonic() + 15
    while len(seen) < 5 and time.monotonic() < deadline:
        msg = consumer.poll(0.2)
        if msg is not None and not msg.error():
            seen.append(msg)
    assert len(seen) == 5
    consumer.commit(message=seen[2], asynchronous=False)  # offset 3 of partition 0
    consumer.close()


def test_durable_broker_keeps_topics_records_and_offsets_across_restart(
        stack_settings: Settings, unique_name: Callable[[str], str]) -> None:
    """broker_storage=s3: a second, private broker + S3 in its own local dir and ports."""
    local = PROJECT_ROOT / f".local-test-durable{_SLOT_OFFSET}"
    env = {"FISCALFLOW_LOCAL_DIR": str(local), "FISCALFLOW_BOOTSTRAP_SERVERS": f"127.0.0.1:{29093 + _SLOT_OFFSET}",
           "FISCALFLOW_S3_ENDPOINT": f"http://127.0.0.1:{28433 + _SLOT_OFFSET}", "FISCALFLOW_BROKER_STORAGE": "s3"}
    settings = stack_settings.model_copy(update={
        "local_dir": local, "bootstrap_servers": env["FISCALFLOW_BOOTSTRAP_SERVERS"],
        "s3_endpoint": env["FISCALFLOW_S3_ENDPOINT"], "broker_storage": "s3"})
    stack = LocalStack(settings)
    topic, group = unique_name("durable"), unique_name("group")
    try:
        stack.start("broker")  # starts its S3 first
        _produce_and_commit(settings, topic, group)
        old = _component(stack, "broker").pid
        # Through the CLI, as the chaos suite does it.
        subprocess.run([FISCALFLOW, "stack", "restart", "broker"], check=True, capture_output=True,
                       env={**os.environ, **env})
        assert _component(stack, "broker").pid != old

        assert partition_counts(settings)[topic] == 2
        consumer = Consumer({**client_config(settings), "group.id": group, "auto.offset.reset": "earliest",
                             "enable.auto.commit": False})
        committed = consumer.committed([TopicPartition(topic, 0)], timeout=10)
        assert committed[0].offset == 3
        consumer.assign([TopicPartition(topic, 0, committed[0].offset), TopicPartition(topic, 1, 0)])
        values: set[bytes | None] = set()
        deadline = time.monotonic() + 15
        while len(values) < 7 and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and not msg.error():
                values.add(msg.value())
        consumer.close()
        # Partition 0 from the committed offset (v6, v8) and all of partition 1 (v1..v9 odd).
        assert values == {b"v6", b"v8", b"v1", b"v3", b"v5", b"v7", b"v9"}
    finally:
        stack.down()


def test_down_stops_everything_it_started(stack_settings: Settings) -> None:
    """On a throwaway stack of its own, so the session stack stays up for the other tests."""
    local = PROJECT_ROOT / f".local-test-down{_SLOT_OFFSET}"
    settings = stack_settings.model_copy(update={
        "local_dir": local, "bootstrap_servers": f"127.0.0.1:{29094 + _SLOT_OFFSET}",
        "sftp_regions": f"west=127.0.0.1:{22204 + _SLOT_OFFSET}"})
    stack = LocalStack(settings)
    stack.start("broker")
    stack.start("sftp-west")
    records = stack.state.load().components
    handles = [h for h in (records[name].handle() for name in ("broker", "sftp-west")) if h]
    assert len(handles) == 2 and all(h.is_alive() for h in handles)
    stack.down()
    assert not any(h.is_alive() for h in handles)
    assert {c.state for c in stack.status().components} == {"stopped"}
    assert not port_open(*split_hostport(f"127.0.0.1:{29094 + _SLOT_OFFSET}"))
    assert not port_open(*split_hostport(f"127.0.0.1:{22204 + _SLOT_OFFSET}"))
