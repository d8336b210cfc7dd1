"""Benchmarks, side by side with peers (see bench/README.md). Not tests: nothing in tests/ imports this."""
