"""Per-partition offset bookkeeping: commit only below the lowest offset still in flight.

Messages of a partition complete out of order (concurrent handlers, deferred retries); the
committable offset is the lowest in-flight offset, or one past the highest seen when nothing
is in flight.  A crash therefore redelivers exactly the unfinished suffix.
"""

from __future__ import annotations

import heapq
import threading
from dataclasses import dataclass, field


@dataclass
class PartitionOffsets:
    in_flight: set[int] = field(default_factory=set)
    _heap: list[int] = field(default_factory=list)
    next_offset: int = -1  # one past the highest offset seen
    committed: int = -1

    def start(self, offset: int) -> None:
        self.in_flight.add(offset)
        heapq.heappush(self._heap, offset)
        if offset + 1 > self.next_offset:
            self.next_offset = offset + 1

    def done(self, offset: int) -> None:
        self.in_flight.discard(offset)

    def committable(self) -> int:
        while self._heap and self._heap[0] not in self.in_flight:
            heapq.heappop(self._heap)
        if self._heap:
            return self._heap[0]
        return self.next_offset


class OffsetTracker:
    """Used on the event loop, and on the consumer thread when a rebalance commits what the revoked
    partitions finished: the lock keeps a heap from being pushed and popped, or popped twice, at once
    (two pops of the same finished head would take an offset still in flight off the heap)."""

    def __init__(self) -> None:
        self.partitions: dict[tuple[str, int], PartitionOffsets] = {}
        self._lock = threading.Lock()

    def start(self, topic: str, partition: int, offset: int) -> None:
        with self._lock:
            self.partitions.setdefault((topic, partition), PartitionOffsets()).start(offset)

    def done(self, topic: str, partition: int, offset: int) -> None:
        p = self.partitions.get((topic, partition))
        if p is not None:
            p.done(offset)

    def in_flight(self, topic: str, partition: int) -> int:
        p = self.partitions.get((topic, partition))
        return len(p.in_flight) if p else 0

    def to_commit(self) -> list[tuple[str, int, int]]:
        """(topic, partition, offset) whose committable offset advanced since the last commit."""
        out = []
        with self._lock:
            for (topic, partition), p in list(self.partitions.items()):
                c = p.committable()
                if c > p.committed and c >= 0:
                    out.append((topic, partition, c))
        return out

    def mark_committed(self, commits: list[tuple[str, int, int]]) -> None:
        for topic, partition, offset in commits:
            p = self.partitions.get((topic, partition))
            if p is not None and offset > p.committed:
                p.committed = offset

    def forget(self, topic: str, partition: int) -> None:
        self.partitions.pop((topic, partition), None)
