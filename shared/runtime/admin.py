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
    """How many partitions ``topic`` has on the broker; None when the broker does not answer in
    ``timeout`` or does not know the topic.  The request does not ask the broker to create the topic
    (an admin client is a producer handle, whose metadata requests would: Tansu makes an unknown
    topic with 4 partitions)."""
    try:
        md = AdminClient(admin_config(settings, **{"allow.auto.create.topics": False})).list_topics(
            topic=topic, timeout=timeout)
    except Exception:  # KafkaException: no answer in time
        return None
    t = md.topics.get(topic)
    if t is None or t.error is not None or not t.partitions:
        return None
    return len(t.partitions)


def partition_counts(settings: Settings, timeout: float = 10.0) -> dict[str, int]:
    admin = AdminClient(admin_config(settings))
    md = admin.list_topics(timeout=timeout)
    return {name: len(t.partitions) for name, t in md.topics.items()}
