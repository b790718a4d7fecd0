"""Benchmarks that print measured ratios (speed goals live here, not in timed tests)."""
