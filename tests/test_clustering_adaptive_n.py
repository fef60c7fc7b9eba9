"""The adaptive-N stopping rule on planted descriptors (tests/planted.py: copies of N0 random
"training" directions under noise), in generation order."""
import numpy as np

from finextract.clustering.adaptive_n import StopRule, confident_centres, same_centres, stop_point
from planted import planted_clusters

N0 = 5
RULE = StopRule(phi=0.6, patience=5, min_per_image=10)


def _shuffled(x, seed=1):
    """Planted descriptors come sorted by cluster; a run generates them interleaved."""
    return x[np.random.default_rng(seed).permutation(len(x))]


def _noise(n, seed=3):
    x = np.random.default_rng(seed).normal(size=(n, 512)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_memorised_run_stops_early_with_every_mode_among_its_centres():
    x, _, centres = planted_clusters(N0, 250, noise=0.5)
    stop = stop_point(_shuffled(x), N0, RULE)
    assert stop["stopped"] and 10 * N0 <= stop["n"] < 250 and stop["saved"] == 1 - stop["n"] / 250
    found = confident_centres(_shuffled(x)[:stop["n"]], N0, RULE.phi)
    assert len(found) == N0 and (found @ centres.T).max(axis=0).min() > 0.8  # every planted mode found


def test_a_mode_that_appears_late_delays_the_stop():
    x, labels, _ = planted_clusters(N0, 250, noise=0.5)
    x = _shuffled(x)
    labels = _shuffled(labels)
    early = x[labels < N0 - 1]                       # four modes from the start …
    late = x[labels == N0 - 1]
    run = np.concatenate([early[:40], late[:2], early[40:]])[:250]   # … the fifth twice at 40
    without = stop_point(np.concatenate([early[:40], _noise(2), early[40:]])[:250], N0, RULE)
    with_late = stop_point(run, N0, RULE)
    assert without["n"] == 10 * N0                   # four stable modes: the earliest stop
    assert with_late["n"] >= 45 + RULE.patience * N0  # the set changed at the check of image 45
    assert with_late["centres"][-1] == N0


def test_decision_never_looks_past_the_stop():
    x, _, _ = planted_clusters(N0, 250, noise=0.5)
    x = _shuffled(x)
    stop = stop_point(x, N0, RULE)
    changed = np.concatenate([x[:stop["n"]], _noise(250 - stop["n"])])
    assert stop_point(changed, N0, RULE) == stop


def test_nothing_repeated_stops_at_the_minimum_and_unsettled_runs_use_the_fixed_n():
    assert stop_point(_noise(250), N0, RULE) == {"n": 50, "stopped": True, "saved": 0.8, "centres": [0] * 10}
    # a new planted mode every 30 images: the centre set keeps changing until the run ends
    x, labels, _ = planted_clusters(9, 270, noise=0.5)
    by_mode = [_shuffled(x[labels == k]) for k in range(9)]
    run = np.concatenate([np.concatenate([m[:30] for m in by_mode[:k + 1]])[-30:] for k in range(9)])
    assert stop_point(run[:150], N0, StopRule(patience=8, min_per_image=2))["stopped"] is False


def test_same_centres_is_symmetric_and_needs_a_match_both_ways():
    a = np.eye(3, dtype=np.float32)
    assert same_centres(a, a[::-1], 0.6) and not same_centres(a, a[:2], 0.6) and not same_centres(a[:2], a, 0.6)
    assert same_centres(a[:0], a[:0], 0.6) and not same_centres(a[:0], a[:1], 0.6)
