"""The paired bootstrap of bench.intervals on synthetic numbers (no model runs)."""
import numpy as np
import pytest

from finextract.bench.intervals import bootstrap_interval, paired_comparison, per_set_differences, verdict


def _scores(diffs_per_set, seeds=2):
    """{set: [{a, b} per seed]} whose a − b is diffs_per_set[set] in every seed."""
    return {f"s{i}": [{"a": 0.5 + d, "b": 0.5} for _ in range(seeds)] for i, d in enumerate(diffs_per_set)}


def test_constant_positive_difference_excludes_zero():
    r = paired_comparison(_scores([0.1] * 6), "a", "b")
    assert r["lo"] == pytest.approx(0.1) and r["hi"] == pytest.approx(0.1)
    assert r["verdict"] == "reproduced" and r["sets_favouring"] == 6 and r["sets"] == 6


def test_symmetric_noise_includes_zero_and_the_reverse_is_reversed():
    r = paired_comparison(_scores([-0.2, 0.2, -0.1, 0.1, -0.05, 0.05]), "a", "b")
    assert r["lo"] < 0 < r["hi"] and r["verdict"] == "not reproduced" and r["mean"] == pytest.approx(0)
    assert paired_comparison(_scores([-0.1, -0.2, -0.15]), "a", "b")["verdict"] == "reversed"
    assert paired_comparison(_scores([0.3]), "a", "b")["verdict"] == "too few sets"  # one set: no interval


def test_tiny_case_equals_the_hand_computed_percentiles():
    # three sets 1, 2, 3: the resampled mean is 1 with probability 1/27 = 3.7 % (> 2.5 %) and 3 with
    # the same probability, so with 10,000 resamples both 2.5th and 97.5th percentiles land there
    assert bootstrap_interval([1.0, 2.0, 3.0]) == (1.0, 3.0)
    # two sets 0, 1: mean 0 or 1 each with probability 1/4
    assert bootstrap_interval([0.0, 1.0]) == (0.0, 1.0)
    # a 50 % interval of 0, 1 cuts the middle: the mean is 0.5 with probability 1/2
    assert bootstrap_interval([0.0, 1.0], level=0.5) == (0.5, 0.5)


def test_seeds_are_averaged_within_a_set_before_resampling():
    scores = {"x": [{"a": 1.0, "b": 0.0}, {"a": 0.0, "b": 0.0}], "y": [{"a": 0.2, "b": 0.0}]}
    assert per_set_differences(scores, "a", "b") == {"x": 0.5, "y": 0.2}
    # fixed RNG seed: the same numbers give the same interval
    assert bootstrap_interval([0.3, -0.1, 0.5, 0.2]) == bootstrap_interval([0.3, -0.1, 0.5, 0.2])
    assert np.isclose(paired_comparison(scores, "a", "b")["mean"], 0.35)


def test_verdict_reads_the_interval_sign():
    assert [verdict(0.01, 0.2), verdict(-0.01, 0.2), verdict(-0.3, -0.01)] == \
        ["reproduced", "not reproduced", "reversed"]
