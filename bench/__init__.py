"""Benchmarks: speed and memory figures, printed; never asserted in the test suite."""
