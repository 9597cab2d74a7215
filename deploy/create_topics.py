"""Create every fiscalflow topic with its partition count (compose one-shot, Helm hook Job).

Topic names come from ``shared.topics`` and partition counts from the same settings the
services read (``FISCALFLOW_PARTITIONS_<STAGE>``, ``FISCALFLOW_PARTITIONS_SHARED``), so the
topics, the services and the chart's scaling bounds cannot disagree.

Every topic's ``max.message.bytes`` is the producers' ``message.max.bytes``
(``FISCALFLOW_MESSAGE_MAX_BYTES``): set when a topic is created, and set again on an existing one
(an idempotent incremental config change), so the documents' size policy and the brokers agree.

An existing topic is otherwise left alone when it has at least the wanted partitions.  With fewer, the
run fails unless ``--increase-partitions`` is given: adding partitions moves keys to other
partitions, so records in flight may be seen out of order by their next stage once.

    python create_topics.py [--replication-factor N] [--increase-partitions] [--dry-run]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from shared.runtime.admin import topic_config
from shared.runtime.kafka import admin_config
from shared.settings import Settings
from shared.topics import TopicSpec


def _admin(settings: Settings, wait_s: float) -> Any:
    from confluent_kafka.admin import AdminClient

    bootstrap = settings.bootstrap_servers
    admin = AdminClient(admin_config(settings))
    deadline = time.monotonic() + wait_s
    while True:  # the broker may still be starting (a Helm hook runs before anything waits for it)
        try:
            admin.list_topics(timeout=5)
            return admin
        except Exception as exc:
            if time.monotonic() > deadline:
                raise SystemExit(f"broker {bootstrap} not reachable after {wait_s:.0f}s: {exc}") from exc
            print(f"waiting for broker {bootstrap}: {exc}", file=sys.stderr)
            time.sleep(2)


def ensure(settings: Settings, replication_factor: int, increase: bool, wait_s: float) -> int:
    from confluent_kafka.admin import NewPartitions, NewTopic  # type: ignore[attr-defined]

    config = topic_config(settings.message_max_bytes)

    admin = _admin(settings, wait_s)
    existing = {name: len(t.partitions) for name, t in admin.list_topics(timeout=10).topics.items()}
    create: list[Any] = []
    grow: list[tuple[TopicSpec, int]] = []
    short: list[tuple[TopicSpec, int]] = []
    wanted = settings.topics()
    for spec in wanted:
        have = existing.get(spec.name)
        if have is None:
            create.append(NewTopic(spec.name, num_partitions=spec.partitions, replication_factor=replication_factor,
                                   config=config))
        elif have < spec.partitions:
            (grow if increase else short).append((spec, have))
    if short:
        for spec, have in short:
            print(f"{spec.name}: has {have} partitions, settings want {spec.partitions}", file=sys.stderr)
        print("refusing to add partitions (keys would move); rerun with --increase-partitions", file=sys.stderr)
        return 1
    failed = 0
    if create:
        for name, fut in admin.create_topics(create, operation_timeout=30).items():
            try:
                fut.result(60)
                print(f"created {name}")
            except Exception as exc:  # a concurrent creator is fine
                if "already exists" not in str(exc).lower() and "TOPIC_ALREADY_EXISTS" not in str(exc):
                    print(f"{name}: {exc}", file=sys.stderr)
                    failed += 1
    if grow:
        parts = [NewPartitions(spec.name, spec.partitions) for spec, _ in grow]
        for name, fut in admin.create_partitions(parts, operation_timeout=30).items():
            try:
                fut.result(60)
                print(f"grew {name}")
            except Exception as exc:
                print(f"{name}: {exc}", file=sys.stderr)
                failed += 1
    existing_wanted = [spec.name for spec in wanted if spec.name in existing]
    failed += _set_config(admin, existing_wanted, config)
    print(f"{len(wanted)} topics wanted, {len(create)} created, {len(grow)} grown, {failed} failed")
    return 1 if failed else 0


def _set_config(admin: Any, names: list[str], config: dict[str, str]) -> int:
    """Set ``config`` on existing topics (only the keys given; other settings untouched)."""
    from confluent_kafka.admin import (  # type: ignore[attr-defined]
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
        ResourceType,
    )

    if not names:
        return 0
    resources = [ConfigResource(ResourceType.TOPIC, name, incremental_configs=[
        ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in config.items()]) for name in names]
    failed = 0
    for res, fut in admin.incremental_alter_configs(resources).items():
        try:
            fut.result(60)
        except Exception as exc:
            print(f"{res.name}: setting {config}: {exc}", file=sys.stderr)
            failed += 1
    print(f"set {config} on {len(names) - failed} existing topics")
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replication-factor", type=int, default=1)
    parser.add_argument("--increase-partitions", action="store_true")
    parser.add_argument("--wait", type=float, default=120.0, help="seconds to wait for the broker")
    parser.add_argument("--dry-run", action="store_true", help="print the topics as JSON, touch nothing")
    args = parser.parse_args(argv)
    settings = Settings()
    if args.dry_run:
        config = topic_config(settings.message_max_bytes)
        print(json.dumps([{"name": t.name, "partitions": t.partitions, "config": config}
                          for t in settings.topics()]))
        return 0
    return ensure(settings, args.replication_factor, args.increase_partitions, args.wait)


if __name__ == "__main__":
    sys.exit(main())
