"""Benchmarks append to the raw run log (.local/bench/RESULTS.md, out of git) through
tooling.bench_results (the demo does too)."""

from tooling.bench_results import append_result, commit, machine

__all__ = ["append_result", "commit", "machine"]
