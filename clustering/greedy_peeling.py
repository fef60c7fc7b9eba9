"""Fast clique partition: the faithful peeling (:mod:`.cliques`) with greedy cliques, polynomial.

Why this shape: the paper's step is "partition the threshold graph into cliques, largest first";
the exponential part is only the exact maximum clique. Here each clique is grown greedily from a
seed, and seeds are taken densest first, which is the classic greedy approximation of the same
peeling:

1. Once per run, a neighbour table (:mod:`.neighbours`): each image's ``k`` most similar images
   and their similarities (memory O(N·k), never the N×N matrix; time O(N²·d/2) in BLAS).
2. Per threshold φ: degree of each image = neighbours with sim ≥ φ. Seeds in order of degree
   (descending; ties to the smaller index). An unassigned seed's unassigned neighbours ≥ φ are
   candidates, in order of similarity to the seed; each is accepted if it is ≥ φ to every member
   accepted so far (one boolean row AND per candidate). The clique is removed; every image ends in
   exactly one clique (singletons included), as in the faithful count.

Cost per threshold O(Σ_seeds deg²·d) ≤ O(N·k·d); no enumeration, no time cap needed, and the
result depends only on the descriptors (deterministic ordering everywhere). Limitation: a clique
cannot exceed k + 1 images; k defaults to 4× the mean cluster size N/N0 (at least 64).
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np


def default_neighbours(n: int, n0: int) -> int:
    return max(1, min(n - 1, max(64, 4 * math.ceil(n / max(n0, 1)))))


def peel_greedy(descriptors: np.ndarray, table: tuple[np.ndarray, np.ndarray], phi: float,
                check_interrupt: Callable[[], None] | None = None) -> list[list[int]]:
    """Partition all images into greedy cliques of the graph sim ≥ φ (densest seeds first)."""
    indices, sims = table
    n = indices.shape[0]
    degree = (sims >= phi).sum(axis=1)  # rows are sorted, so the ≥ φ neighbours are a prefix
    order = np.lexsort((np.arange(n), -degree))
    assigned = np.zeros(n, dtype=bool)
    cliques = []
    for step, seed in enumerate(order.tolist()):
        if step % 512 == 0 and check_interrupt is not None:
            check_interrupt()
        if degree[seed] == 0:  # seeds come by degree: the rest have no edge at all, singletons
            cliques.extend([i] for i in order[step:].tolist() if not assigned[i])
            break
        if assigned[seed]:
            continue
        cand = indices[seed, :degree[seed]]
        cand = cand[~assigned[cand]]
        members = [seed]
        if len(cand):
            x = descriptors[cand]
            compatible_rows = (x @ x.T) >= phi
            if compatible_rows.all():  # already a clique (a memorised image's samples): all join,
                members.extend(cand.tolist())  # as the loop below would take them one by one
            else:
                compatible = np.ones(len(cand), dtype=bool)
                for j in range(len(cand)):
                    if compatible[j]:
                        members.append(int(cand[j]))
                        compatible &= compatible_rows[j]
        assigned[members] = True
        cliques.append(sorted(members))
    return cliques
