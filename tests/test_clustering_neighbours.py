"""The fast mode's neighbour table (clustering/neighbours.py: half the similarity matrix, floors,
uint64 keys) against every row computed in full (tests/full_rows.py, the way it was computed
before), and the greedy peeling built on it against its rule written out plainly. Blocks are
small here so that every path runs: diagonal and off-diagonal blocks, a ragged last block,
diagonal blocks narrower than k, rows overflowing their list, ties at the k-th place."""
import numpy as np
import pytest

from full_rows import full_rows_table
from planted import planted_clusters, planted_partition
from finextract.clustering.greedy_peeling import default_neighbours, peel_greedy
from finextract.clustering.neighbours import neighbour_table
from finextract.clustering.threshold_search import cluster


def unit_rows(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def tied_rows(n: int, seed: int) -> np.ndarray:
    """Four entries of 0.5 among 12 dimensions: every similarity is 0, 0.25, 0.5, 0.75 or 1,
    exact in float32 whatever the order of summation (so any N, even below 16 rows, compares
    the same numbers), and ties at the k-th place are everywhere; some images repeated exactly."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 12), np.float32)
    for row in x:
        row[rng.choice(12, 4, replace=False)] = 0.5
    x[n // 2:n // 2 + 10] = x[0]
    return x


def assert_same_table(x, k, block):
    new_indices, new_sims = neighbour_table(x, k, block=block)
    ref_indices, ref_sims = full_rows_table(x, k)
    assert new_indices.dtype == np.int64 and new_sims.dtype == np.float32
    assert new_indices.shape == ref_indices.shape == (len(x), min(k, len(x) - 1))
    np.testing.assert_array_equal(new_indices, ref_indices)
    np.testing.assert_array_equal(new_sims, ref_sims)  # same float32 numbers, not just close


@pytest.mark.parametrize("n, k, block", [(1500, 64, 256), (700, 200, 96), (50, 10, 7), (1040, 30, 1030)])
def test_random_descriptors_match_full_rows(n, k, block):
    # blocks of 7 rows, and a last block of 10 rows: MKL would sum fewer than 16 rows in another
    # order (the reference's blocks here all have at least 16 rows, as 1024-row blocks of N >= 16
    # have unless N mod 1024 < 16)
    assert_same_table(unit_rows(n, 512, seed=n), k, block)


@pytest.mark.parametrize("n0, n, block", [(40, 2000, 512), (10, 500, 128)])
def test_planted_descriptors_match_full_rows(n0, n, block):
    x, _, _ = planted_clusters(n0, n, noise=0.8, seed=n)
    assert_same_table(x, default_neighbours(n, n0), block)


@pytest.mark.parametrize("n, k, block", [(600, 40, 128), (600, 150, 64), (90, 30, 32)])
def test_ties_at_the_kth_place_go_to_the_smaller_index(n, k, block):
    x = tied_rows(n, seed=k)
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    kth = -np.sort(-sims, axis=1)[:, k - 1]
    # the case under test: in most rows, images tied at the k-th place are more than fit
    assert ((sims >= kth[:, None]).sum(axis=1) > k).mean() > 0.5
    assert_same_table(x, k, block)


@pytest.mark.parametrize("n, k, block", [(9, 5, 4), (3, 5, 2), (2, 1, 2048)])
def test_tiny_sets(n, k, block):
    assert_same_table(tied_rows(n, seed=n), k, block)
    indices, sims = neighbour_table(unit_rows(1, 512, seed=0), 5)
    assert indices.shape == sims.shape == (1, 0)  # one image has no neighbours


def plain_greedy(x, table, phi):
    """The peeling rule of clustering/greedy_peeling.py, one image at a time: seeds by degree
    (neighbours ≥ φ in the table) descending then index; an unassigned seed takes its unassigned
    table neighbours ≥ φ in table order, each if ≥ φ to every neighbour taken so far."""
    indices, sims = table
    degree = (sims >= phi).sum(axis=1)
    assigned, cliques = set(), []
    for seed in sorted(range(len(x)), key=lambda i: (-degree[i], i)):
        if seed in assigned:
            continue
        taken = []
        for j in indices[seed, :degree[seed]].tolist():
            if j not in assigned and all(float(x[j] @ x[m]) >= phi for m in taken):
                taken.append(j)
        assigned.update([seed, *taken])
        cliques.append(sorted([seed, *taken]))
    return cliques


@pytest.mark.parametrize("data", ["random", "planted"])
def test_greedy_peeling_follows_its_rule(data):
    if data == "random":  # 32-d: similarities spread wide, so cliques of every size form
        x, k, phis = unit_rows(400, 32, seed=11), 40, (0.2, 0.35, 0.5)
    else:
        x, _, _ = planted_clusters(12, 600, noise=1.0, seed=12)
        k, phis = default_neighbours(600, 12), (0.3, 0.45, 0.6)
    table = neighbour_table(x, k, block=128)
    for phi in phis:
        assert peel_greedy(x, table, phi) == plain_greedy(x, table, phi)


@pytest.mark.parametrize("n0, n", [(10, 500), (20, 1000)])
def test_fast_mode_equals_faithful_mode_and_the_planted_truth(n0, n):
    x, labels, _ = planted_clusters(n0, n, noise=0.8, seed=n0)
    fast, faithful = cluster(x, n0, mode="fast"), cluster(x, n0, mode="faithful")
    assert sorted(tuple(c) for c in fast.clusters) == planted_partition(labels)
    assert fast.clusters == faithful.clusters and fast.indices == faithful.indices
