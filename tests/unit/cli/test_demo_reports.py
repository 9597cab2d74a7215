"""The demo prints its reports once they count every record its jobs finished (tooling/demo.py)."""

from __future__ import annotations

from collections import Counter

from tooling.demo import final_counts, reports_behind


def _summary(**by_status: int) -> dict[str, object]:
    return {"by_status": {"downloading": 7, **by_status}, "by_reason": {}}


def test_records_of_earlier_runs_on_the_stack_do_not_count_for_this_one() -> None:
    before = final_counts(_summary(archived=100, rejected=4))
    jobs = {"j1": {"counts": {"archived": 5, "rejected": 1}}}
    # The summary already held 100 archived records: 103 now means 2 of this run's 5 are missing.
    assert reports_behind(before, final_counts(_summary(archived=103, rejected=5)), jobs) == {"archived": 2}
    assert reports_behind(before, final_counts(_summary(archived=105, rejected=5)), jobs) == {}


def test_every_job_and_every_final_status_is_waited_for() -> None:
    before = final_counts(_summary())
    jobs = {"north": {"counts": {"archived": 3, "duplicate": 1}},
            "south": {"counts": {"archived": 2, "rejected": 2, "queued": 9}}}  # queued: not final, not waited for
    now = final_counts(_summary(archived=5, duplicate=1))
    assert reports_behind(before, now, jobs) == {"rejected": 2}


def test_final_counts_reads_only_final_statuses() -> None:
    assert final_counts(_summary(archived=3)) == Counter({"archived": 3, "rejected": 0, "duplicate": 0})
