"""A broker that lost its log (the local broker on memory storage restarted; a topic deleted and
created again) while a stage was reading it: the stage reads the new log from its start.

The local broker answers a fetch beyond the end of a partition with nothing at all (no
OFFSET_OUT_OF_RANGE, which would make the client reset), and it takes a commit of any offset.  A
stage kept its position of the old log (~50 per partition here), or committed it into the new
one, and skipped every record the new log got until it grew past that: the records whose messages
were re-sent after such a loss waited for the next re-drive (tests/e2e/test_redrive.py saw 436 of
2,020 re-driven records stay stuck that way).

Its own broker, on a port of its own: the shared test broker must not be restarted under the
other tests.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from shared.runtime.admin import ensure_topics
from shared.settings import Settings
from shared.topics import TopicSpec
from tests.integration.runtime.conftest import PARTITIONS, Namespace
from tests.integration.runtime.harness import TOPICS
from tests.support.sockets import free_port
from tests.support.wait import wait_for
from tooling.stack.broker import tansu_binary

pytestmark = pytest.mark.integration


class MemoryBroker:
    """A Tansu broker on memory storage, started and stopped by its PID."""

    def __init__(self, port: int, log: Path) -> None:
        self.url = f"tcp://127.0.0.1:{port}"
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([str(tansu_binary()), "broker", "--listener-url", self.url,
                                          "--advertised-listener-url", self.url, "--storage-engine",
                                          "memory://tansu/"], stdout=out, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture
def own_broker(runtime_settings: Settings, tmp_path: Path) -> Iterator[tuple[MemoryBroker, Settings]]:
    port = free_port()
    broker = MemoryBroker(port, tmp_path / "broker.log")
    broker.start()
    settings = runtime_settings.model_copy(update={"bootstrap_servers": f"127.0.0.1:{port}"})
    try:
        yield broker, settings
    finally:
        broker.kill()


def test_a_stage_reads_the_new_log_from_its_start_after_the_broker_lost_the_old_one(
        own_broker: tuple[MemoryBroker, Settings], tmp_path: Path) -> None:
    broker, settings = own_broker
    ns = Namespace(settings, tmp_path)
    try:
        first = [{"id": f"a{i}"} for i in range(400)]
        ns.produce(first)
        stage = ns.stage(env={"FISCALFLOW_SESSION_TIMEOUT_MS": "4000"})
        assert len(ns.wait_sink(len(first))) == len(first)
        old = wait_for(lambda: [ns.committed(p) for p in range(PARTITIONS)], lambda c: min(c) > 20,
                       "the old log's offsets committed", 30)
        # Held while the broker loses everything (topics, messages, the group), as a stage is
        # when its node stalls.  The topics come back empty, as the stack's topic check makes
        # them, and the group gets the offsets of the old log back: what a replica that finished
        # its in-hand work after the loss commits (the broker takes any commit).
        assert stage.proc is not None
        stage.proc.send_signal(signal.SIGSTOP)
        try:
            broker.kill()
            broker.start()
            ensure_topics(settings, [TopicSpec(ns.topic(t), PARTITIONS) for t in TOPICS])
            _commit(settings, f"{ns.ns}-group", [(ns.topic("fiscal.validate"), p, old[p]) for p in range(PARTITIONS)])
            time.sleep(5)  # past the session timeout: it rejoins, and resumes at those offsets
        finally:
            stage.proc.send_signal(signal.SIGCONT)
        after = [{"id": f"b{i}"} for i in range(40)]  # ~10 per partition: far below the old offsets
        ns.produce(after)
        wait_for(lambda: {r["id"] for r in after} - {r["record_id"] for r in ns.sink()}, lambda missed: not missed,
                 f"every one of the {len(after)} records of the new log handled (last: those never handled)", 45)
        # And the group's offsets now point into the new log, not past its end.
        wait_for(lambda: [ns.committed(p) for p in range(PARTITIONS)],
                 lambda c: sum(max(0, x) for x in c) == len(after), "the group's offsets inside the new log", 30)
    finally:
        ns.close()


def _commit(settings: Settings, group: str, offsets: list[tuple[str, int, int]]) -> None:
    c = Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": group, "enable.auto.commit": False})
    try:
        c.commit(offsets=[TopicPartition(*o) for o in offsets], asynchronous=False)
    finally:
        c.close()
