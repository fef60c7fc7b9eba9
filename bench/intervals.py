"""Paired differences between extraction methods with bootstrap intervals over concept sets.

The paper reports one number per method; a claim such as "FineXtract beats CFG" is only evidence
when the difference survives the spread between concept sets. Methods share a concept set's
fine-tune, caption and per-image seeds, so they are compared *paired*: per set, the difference of
the two methods' scores, averaged over that set's sampling seeds (seeds are repeated measurements
of one set, not independent sets). The interval is the percentile bootstrap of the mean of those
per-set differences: resample the sets with replacement, ``resamples`` times, from a fixed RNG
seed, so the same JSON always gives the same interval.

A claim "a > b" is *reproduced* when the 95 % interval of a − b lies above zero, *reversed* when it
lies below, and *not reproduced* when it contains zero; one set gives no interval (*too few sets*).
Pure functions: numbers in, numbers out.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

LEVEL = 0.95
RESAMPLES = 10_000
RNG_SEED = 0


def per_set_differences(scores: Mapping[str, Sequence[Mapping[str, float]]], a: str, b: str) -> dict[str, float]:
    """{set: mean over its seeds of score[a] − score[b]}; ``scores[set]`` is one {method: score}
    per sampling seed."""
    out = {}
    for name, seeds in scores.items():
        if not seeds:
            raise ValueError(f"set {name!r} has no seeds")
        out[name] = float(np.mean([s[a] - s[b] for s in seeds]))
    return out


def bootstrap_interval(values: Sequence[float], level: float = LEVEL, resamples: int = RESAMPLES,
                       seed: int = RNG_SEED) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (one value per concept set)."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or len(x) == 0:
        raise ValueError("need at least one value")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(resamples, len(x)))].mean(axis=1)
    tail = (1.0 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(lo), float(hi)


def verdict(lo: float, hi: float) -> str:
    """What an interval of a − b says about the claim "a > b"."""
    return "reproduced" if lo > 0 else "reversed" if hi < 0 else "not reproduced"


def paired_comparison(scores: Mapping[str, Sequence[Mapping[str, float]]], a: str, b: str,
                      level: float = LEVEL, resamples: int = RESAMPLES, seed: int = RNG_SEED) -> dict:
    """Mean of a − b over sets, its bootstrap interval, the per-set differences, how many sets
    favour a, and the verdict on "a > b"."""
    diffs = per_set_differences(scores, a, b)
    lo, hi = bootstrap_interval(list(diffs.values()), level, resamples, seed)
    return {"mean": float(np.mean(list(diffs.values()))), "lo": lo, "hi": hi, "level": level,
            "sets": len(diffs), "sets_favouring": int(sum(d > 0 for d in diffs.values())),
            "per_set": diffs, "verdict": verdict(lo, hi) if len(diffs) > 1 else "too few sets"}
