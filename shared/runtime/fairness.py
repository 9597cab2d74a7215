"""Polled messages waiting for a handler slot, one queue per key, served fairly.

A stage whose messages wait on different downstreams (the download stage: each region's SFTP
server) names a key per message (``StageSpec.fair_key``).  A slot that frees goes to the waiting
key with the fewest messages in flight, so a long run of one key's records in the topic does not
hold every slot while another key's server sits idle.  To find the other keys' records the engine
reads past a run of one key's (``StageSpec.look_ahead``); see :meth:`KeyedPending.all_served`.

Without a key function every message has the key None: one queue, first in, first out.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Iterator, Mapping

from shared.runtime.backend import Part
from shared.runtime.message import Message

KeyOf = Callable[[Message], str | None]


class KeyedPending:
    def __init__(self, key_of: KeyOf | None = None) -> None:
        self._key_of = key_of
        self._queues: dict[str | None, collections.deque[Message]] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def __bool__(self) -> bool:
        return self._count > 0

    def __iter__(self) -> Iterator[Message]:
        for queue in self._queues.values():
            yield from queue

    def key_of(self, msg: Message) -> str | None:
        return self._key_of(msg) if self._key_of is not None else None

    def extend(self, msgs: Iterable[Message]) -> None:
        for msg in msgs:
            key = self.key_of(msg)
            queue = self._queues.get(key)
            if queue is None:
                queue = self._queues[key] = collections.deque()
            queue.append(msg)
            self._count += 1

    def next(self, in_flight: Mapping[str | None, int]) -> tuple[str | None, Message] | None:
        """The message the next slot goes to: the head of the waiting key with the fewest in flight
        (of equals, the key that has waited longest for a slot)."""
        best: str | None = None
        best_n = -1
        for key in self._queues:
            n = in_flight.get(key, 0)
            if best_n < 0 or n < best_n:
                best, best_n = key, n
        if best_n < 0:
            return None
        return best, self._queues[best][0]

    def remove(self, key: str | None, msg: Message) -> bool:
        """Take ``msg`` off its queue if it is still at its head (a rebalance may have dropped it)."""
        queue = self._queues.get(key)
        if not queue or queue[0] is not msg:
            return False
        queue.popleft()
        self._count -= 1
        if queue:
            self._queues[key] = self._queues.pop(key)  # served: behind the other waiting keys of equal share
        else:
            del self._queues[key]
        return True

    def drop(self, parts: set[Part]) -> None:
        """Forget the waiting messages of partitions this replica no longer owns."""
        for key in list(self._queues):
            queue = self._queues[key]
            kept = collections.deque(m for m in queue if (m.topic, m.partition) not in parts)
            self._count -= len(queue) - len(kept)
            if kept:
                self._queues[key] = kept
            else:
                del self._queues[key]

    def all_served(self, in_flight: Mapping[str | None, int], slots: int) -> bool:
        """True when every waiting key already holds its fair share of ``slots`` (the slots split
        evenly over the keys in flight or waiting): reading on may find a key that does not.
        False while a waiting key is owed slots: the next free slot is its, no need to read on."""
        keys = set(self._queues) | {k for k, n in in_flight.items() if n > 0}
        if not keys:
            return True
        share = slots / len(keys)
        return all(in_flight.get(key, 0) >= share for key in self._queues)
