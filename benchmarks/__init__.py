"""Benchmark scripts behind `make bench`: each prints what it measured, nothing asserts."""
