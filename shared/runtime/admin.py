"""Topic administration: create what is missing with its partition count, leave the rest."""

from __future__ import annotations

from collections.abc import Iterable

from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from shared.runtime.kafka import admin_config
from shared.settings import Settings
from shared.topics import TopicSpec


def topic_config(message_max_bytes: int) -> dict[str, str]:
    """Per-topic configuration every fiscalflow topic is created with: the message limit is the
    producers' (``message.max.bytes``), explicit rather than each broker's default."""
    return {"max.message.bytes": str(message_max_bytes)}


def ensure_topics(settings: Settings, specs: Iterable[TopicSpec], timeout: float = 30.0,
                  message_max_bytes: int | None = None) -> list[str]:
    """Create every missing topic (the local broker would auto-create them with 4 partitions),
    with ``max.message.bytes`` when given.

    Returns the names created.  Existing topics are left alone: partitions cannot be added on
    the local broker, so a changed count needs the topic recreated, by hand.
    """
    admin = AdminClient(admin_config(settings))
    existing = set(admin.list_topics(timeout=timeout).topics)
    config = topic_config(message_max_bytes) if message_max_bytes else {}
    wanted = [NewTopic(s.name, num_partitions=s.partitions, replication_factor=1, config=config)
              for s in specs if s.name not in existing]
    if not wanted:
        return []
    created = []
    for name, fut in admin.create_topics(wanted, operation_timeout=timeout).items():
        try:
            fut.result(timeout)
            created.append(name)
        except Exception as exc:  # raced with another creator: fine if it exists now
            if "TOPIC_ALREADY_EXISTS" not in str(exc) and "already exists" not in str(exc).lower():
                raise
    return created


def topic_partitions(settings: Settings, topic: str, timeout: float = 5.0) -> int | None:
    """How many partitions ``topic`` has on the broker; None when the broker does not know it.
    Read from the list of every topic, not asked for by name: a broker that makes topics on demand
    (Tansu, for an admin client) would make the one it was asked about."""
    return partition_counts(settings, timeout).get(topic)


def partition_counts(settings: Settings, timeout: float = 10.0) -> dict[str, int]:
    admin = AdminClient(admin_config(settings))
    md = admin.list_topics(timeout=timeout)
    return {name: len(t.partitions) for name, t in md.topics.items()}
