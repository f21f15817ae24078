"""Benchmarks for every hot path; `python -m benchmarks` (make bench) writes docs/BENCHMARKS.md."""
