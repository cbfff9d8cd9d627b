"""Benchmarks that measure the package: programs, run from scripts/ or with ``python -m``."""
