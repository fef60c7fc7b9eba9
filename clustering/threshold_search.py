"""Threshold search and extraction of N0 central images (paper §4.3).

The paper raises φ "until the number of cliques equals N0". The number of cliques of the peeled
partition grows with φ: 1 clique for a complete graph, N singletons above the largest similarity,
with a plateau at N0 where the clusters are separated. Instead of a linear sweep (the official
code: +0.01 from the 25th percentile, 30 s per step) φ is found by **bisection** on
[min sim, max sim] for the top of that plateau: invariant count(lo) ≤ N0 < count(hi). Why the
top: below the plateau, where unrelated images start to connect, the count of a noisy graph
wanders around N0 (measured on planted data: the lowest φ with ≥ N0 cliques mixed clusters),
while above it the count only rises as cliques split; and dense low thresholds are exactly the
ones whose clique search explodes. A threshold whose search hits the time cap (faithful mode) is
treated as too dense, so the search "moves on" to higher φ, as the paper does. It stops when
hi − lo ≤ ``resolution``.

Result: the partition at lo if it has exactly N0 cliques. When exactly N0 cannot be hit (the count
jumps over N0 between two thresholds closer than ``resolution``), the partition at hi has more
than N0 cliques and we keep exactly N0 of them: the N0 best by :func:`.central_image.rank_key`
(largest first, then tightest, then smallest index). The official code keeps all of them, which
inflates AS (more extracted images than training images); ``dropped`` reports how many were left
out, ``threshold`` is the φ of the partition returned.

Modes: ``faithful`` (:mod:`.cliques`, exact maximal cliques with networkx, time cap per threshold)
and ``fast`` (:mod:`.greedy_peeling`, greedy cliques, polynomial, no cap needed).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch

from .central_image import central_image, mean_internal_similarity, rank_key
from .cliques import peel_cliques
from .greedy_peeling import default_neighbours, peel_greedy
from .neighbours import neighbour_table

MODES = ("fast", "faithful")


@dataclass
class ClusterResult:
    """What the clustering step hands on: ``indices`` are the N0 central images (into the generated
    set), best cluster first; ``clusters`` the members of each, same order."""
    indices: list[int]
    clusters: list[list[int]]
    sizes: list[int]
    mean_similarities: list[float]
    threshold: float
    mode: str
    time_capped: bool
    capped_thresholds: int
    dropped: int
    trials: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def cluster(descriptors, n0: int, mode: str = "fast", time_cap: float = 30.0,
            resolution: float = 1e-3, max_edges: int = 2_000_000, neighbours: int | None = None,
            progress: Callable[[int, int], None] | None = None,
            check_interrupt: Callable[[], None] | None = None) -> ClusterResult:
    """Cluster N generated images' descriptors (N×d, L2-normalised) into exactly ``n0`` cliques
    and pick each one's central image. ``time_cap`` (seconds, faithful mode) bounds each threshold;
    ``progress(done, total)`` is called after each threshold tried; ``check_interrupt()`` is
    called often and may raise to stop the run."""
    start = time.monotonic()
    x = descriptors.detach().float().cpu().numpy() if isinstance(descriptors, torch.Tensor) \
        else np.asarray(descriptors, dtype=np.float32)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"need a non-empty N×d descriptor matrix, got shape {x.shape}")
    n = x.shape[0]
    if not 1 <= n0 <= n:
        raise ValueError(f"N0 must be between 1 and the number of generated images ({n}), got {n0}")

    if mode == "faithful":
        similarity = x @ x.T

        def evaluate(phi):
            return peel_cliques(similarity, x, phi, time.monotonic() + time_cap, check_interrupt,
                                max_edges)
        np.fill_diagonal(similarity, np.inf)  # the diagonal is never an edge: reuse it for min/max
        lo = float(similarity.min()) if n > 1 else 1.0
        np.fill_diagonal(similarity, -np.inf)
        top = float(similarity.max()) if n > 1 else 1.0
    else:
        table = neighbour_table(x, neighbours or default_neighbours(n, n0),
                                check_interrupt=check_interrupt)

        def evaluate(phi):
            return peel_greedy(x, table, phi, check_interrupt)
        lo, top = (float(table[1].min()), float(table[1].max())) if n > 1 else (1.0, 1.0)

    # at lo the graph is complete (one clique); above the largest similarity all are singletons
    lo, hi = math.nextafter(lo, -math.inf), math.nextafter(top, math.inf)
    below, below_phi = None, lo          # last partition seen with <= N0 cliques
    above, above_phi = [[i] for i in range(n)], hi  # first partition seen with > N0 cliques
    steps = max(1, math.ceil(math.log2(max(hi - lo, resolution) / resolution)))
    trials, capped = [], 0
    while hi - lo > resolution:
        mid = (lo + hi) / 2
        found = evaluate(mid)
        trials.append({"threshold": mid, "cliques": None if found is None else len(found)})
        if found is None:           # time cap: too dense to finish, move on to a higher threshold
            capped += 1
            lo = mid
        elif len(found) <= n0:
            lo, below, below_phi = mid, found, mid
        else:
            hi, above, above_phi = mid, found, mid
        if progress is not None:
            progress(len(trials), steps)
    if below is not None and len(below) == n0:
        best, threshold = below, below_phi
    else:
        best, threshold = above, above_phi
    ranked = sorted(best, key=lambda c: rank_key(x, c))
    kept = ranked[:n0]
    return ClusterResult(
        indices=[central_image(x, c) for c in kept],
        clusters=kept,
        sizes=[len(c) for c in kept],
        mean_similarities=[mean_internal_similarity(x, c) for c in kept],
        threshold=threshold, mode=mode, time_capped=capped > 0, capped_thresholds=capped,
        dropped=len(ranked) - n0, trials=trials, seconds=time.monotonic() - start)
