"""Benchmarks: commands (``python -m finextract.bench.<name>``) that print measurements taken side
by side in one run. Not tests."""
