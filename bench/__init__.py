"""Benchmarks: commands (``python -m finextract.bench.<name>``) that print ratios measured side by side in one run."""
