"""Benchmarks append to the raw run log (.local/bench/RESULTS.md, out of git) through
shared.bench_results (the demo does too)."""

from shared.bench_results import append_result, commit, machine

__all__ = ["append_result", "commit", "machine"]
