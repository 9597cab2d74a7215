"""The waiting messages of a stage with a fair key: which one a free slot goes to, and when reading
on past them is worth it (shared/runtime/fairness.py)."""

from __future__ import annotations

from shared.runtime.fairness import KeyedPending
from shared.runtime.message import Message


def _msg(key: str, offset: int, partition: int = 0) -> Message:
    return Message("t", partition, offset, None, key.encode(), {}, 0)


def _by_value(msg: Message) -> str:
    return msg.value.decode()


def _drain(pending: KeyedPending, in_flight: dict[str | None, int]) -> list[tuple[str | None, int]]:
    """Start every waiting message in the order slots would go to them, none finishing."""
    order = []
    while (nxt := pending.next(in_flight)) is not None:
        key, msg = nxt
        assert pending.remove(key, msg)
        in_flight[key] = in_flight.get(key, 0) + 1
        order.append((key, msg.offset))
    return order


def test_a_free_slot_goes_to_the_waiting_key_with_fewest_in_flight_each_key_in_its_order() -> None:
    pending = KeyedPending(_by_value)
    pending.extend([_msg("north", o) for o in range(4)] + [_msg("south", o) for o in range(4, 6)])
    order = _drain(pending, {"north": 3})
    # south owes 3 slots before north gets another; then they alternate; each key first in, first out.
    assert order == [("south", 4), ("south", 5), ("north", 0), ("north", 1), ("north", 2), ("north", 3)]
    assert len(pending) == 0 and not pending


def test_keys_with_equal_shares_take_turns() -> None:
    pending = KeyedPending(_by_value)
    pending.extend([_msg("a", o) for o in range(3)] + [_msg("b", o) for o in range(3, 6)])
    assert [k for k, _ in _drain(pending, {})] == ["a", "b", "a", "b", "a", "b"]


def test_without_a_key_function_it_is_first_in_first_out() -> None:
    pending = KeyedPending()
    pending.extend([_msg("b", 0), _msg("a", 1), _msg("b", 2)])
    assert [o for _, o in _drain(pending, {None: 5})] == [0, 1, 2]


def test_a_dropped_partition_leaves_nothing_behind_and_a_stale_head_is_not_taken() -> None:
    pending = KeyedPending(_by_value)
    pending.extend([_msg("a", 0, partition=1), _msg("a", 1, partition=2), _msg("b", 2, partition=1)])
    nxt = pending.next({})
    assert nxt is not None
    pending.drop({("t", 1)})  # a rebalance, while the engine waited for nxt's bytes
    assert not pending.remove(*nxt), "a message of a revoked partition is never started"
    assert len(pending) == 1 and [m.partition for m in pending] == [2]


def test_reading_on_is_worth_it_only_while_every_waiting_key_holds_its_share() -> None:
    pending = KeyedPending(_by_value)
    assert pending.all_served({"north": 10}, 10), "every slot is north's and nothing waits: look further"
    pending.extend([_msg("north", 0)])
    assert pending.all_served({"north": 10}, 10), "only north waits, and it holds every slot"
    pending.extend([_msg("south", 1)])
    assert not pending.all_served({"north": 10}, 10), "south waits with no slot: the next free one is its"
    assert pending.all_served({"north": 5, "south": 5}, 10), "each holds half: a third region may lie further on"
    assert not pending.all_served({"north": 7, "south": 2, "east": 1}, 10), "south is owed slots"
