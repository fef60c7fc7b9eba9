"""Clique clustering of §4.3 on planted-cluster descriptors (synthetic ground truth)."""
import itertools
import time

import numpy as np
import pytest

from planted import planted_clusters, planted_partition
from finextract.clustering.central_image import central_image
from finextract.clustering.threshold_search import cluster


class Stop(Exception):
    pass


@pytest.mark.parametrize("mode", ["fast", "faithful"])
def test_planted_clusters_recovered_exactly(mode):
    x, labels, centres = planted_clusters(n0=8, n=240, noise=0.8, seed=1)
    r = cluster(x, 8, mode=mode)
    assert sorted(tuple(c) for c in r.clusters) == planted_partition(labels)
    assert r.sizes == sorted(r.sizes, reverse=True) and sum(r.sizes) == 240
    assert r.dropped == 0 and not r.time_capped and r.mode == mode
    # each central image is its clique's member nearest the planted training image
    for c, i in zip(r.clusters, r.indices):
        assert i == central_image(x, c) and labels[i] == labels[c[0]]
    intra = min(float((x[c] @ x[c].T).min()) for c in r.clusters)
    assert r.threshold <= intra  # every clique is a clique of the graph at the threshold reached


def test_modes_agree_and_are_deterministic():
    x, labels, _ = planted_clusters(n0=6, n=150, noise=0.9, seed=2)
    runs = [cluster(x, 6, mode=m) for m in ("fast", "fast", "faithful")]
    assert runs[0].to_dict() | {"seconds": 0} == runs[1].to_dict() | {"seconds": 0}
    assert runs[0].indices == runs[2].indices


def test_exactly_n0_when_the_partition_jumps_past_it():
    # three pairs on orthogonal axes (pair similarities 0.99, 0.9, 0.95, between pairs exactly 0):
    # the count is 1 (φ <= 0), 3 (pairs) or more, never 2; the rule keeps the 2 best cliques of
    # the 3 (same size, so the tightest two)
    x = np.zeros((6, 6), np.float32)
    for pair, s in enumerate((0.99, 0.9, 0.95)):
        x[2 * pair, pair] = 1.0
        x[2 * pair + 1, pair], x[2 * pair + 1, 3 + pair] = s, np.sqrt(1 - s * s)
    for mode in ("fast", "faithful"):
        r = cluster(x, 2, mode=mode)
        assert len(r.indices) == 2 and r.dropped == 1
        assert r.clusters == [[0, 1], [4, 5]]


def test_faithful_time_cap_moves_on_and_is_reported():
    # a dense graph whose clique enumeration cannot finish in 0 s
    x, _, _ = planted_clusters(n0=4, n=120, noise=1.5, seed=3)
    r = cluster(x, 4, mode="faithful", time_cap=0.0)
    assert r.time_capped and r.capped_thresholds == len(r.trials)
    assert len(r.indices) == 4  # falls back to the singleton partition, keeps the rule


def test_fast_mode_is_polynomial_on_a_clique_explosion():
    # Moon-Moser graph: 3^(n/3) maximal cliques. Vertices in 20 groups of 3; same group -> sim 0,
    # different groups -> sim 0.5. Faithful enumeration would list 3^20 ≈ 3.5e9 cliques.
    groups = 20
    v = np.zeros((groups * 3, groups * 3 + 1))
    for g, k in itertools.product(range(groups), range(3)):
        v[3 * g + k, 3 * g + k] = 1.0
    gram = np.where(np.kron(np.eye(groups), np.ones((3, 3))) > 0, 0.0, 0.5)
    np.fill_diagonal(gram, 1.0)
    w, q = np.linalg.eigh(gram)
    x = (q * np.sqrt(np.clip(w, 0, None))).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    start = time.process_time()  # CPU time: the machine is shared, wall time is not ours
    r = cluster(x, 3, mode="fast")
    assert time.process_time() - start < 5 and len(r.indices) == 3
    capped = cluster(x, 3, mode="faithful", time_cap=0.2)
    assert capped.time_capped


@pytest.mark.parametrize("mode", ["fast", "faithful"])
def test_interruption_propagates(mode):
    x, _, _ = planted_clusters(n0=5, n=200, seed=4)
    calls = []

    def check():
        calls.append(1)
        if len(calls) > 3:
            raise Stop()

    with pytest.raises(Stop):
        cluster(x, 5, mode=mode, check_interrupt=check)


def test_progress_reports_each_threshold():
    x, _, _ = planted_clusters(n0=3, n=60, seed=5)
    seen = []
    r = cluster(x, 3, progress=lambda done, total: seen.append((done, total)))
    assert [d for d, _ in seen] == list(range(1, len(r.trials) + 1))


def test_bad_inputs():
    x, _, _ = planted_clusters(n0=3, n=30, seed=6)
    for n0 in (0, 31):
        with pytest.raises(ValueError, match="N0 must be between 1"):
            cluster(x, n0)
    with pytest.raises(ValueError, match="non-empty"):
        cluster(np.zeros((0, 512), np.float32), 1)
    with pytest.raises(ValueError, match="mode"):
        cluster(x, 3, mode="exact")
    one = cluster(x[:1], 1)
    assert one.indices == [0] and one.sizes == [1]
