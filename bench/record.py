"""Benchmarks append to the raw run log (.local/bench/: RESULTS.md and runs.jsonl, out of git)
through tooling.bench_results (the demo and the chaos suite do too)."""

from tooling.bench_results import Measurement, append_result, commit, machine

__all__ = ["Measurement", "append_result", "commit", "machine"]
