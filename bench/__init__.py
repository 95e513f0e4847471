"""Benchmarks. Run with `make bench`; never part of the test run."""
