"""Benchmarks: commands (``python -m finextract.bench.<name>``) that print figures measured side by
side in one run. Not tests."""
