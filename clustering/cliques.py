"""Faithful clique partition of the similarity graph (paper §4.3, as the official code peels).

Graph: one vertex per generated image, an edge where sim ≥ φ. The images are partitioned into
cliques by repeatedly taking the largest maximal clique (networkx ``find_cliques``, Bron–Kerbosch)
and removing it, singletons included, which is what the paper's "number of cliques" counts in the
official implementation. Removing a clique only changes its own connected component, so each
component keeps its own best clique and only a split component is searched again: the same
cliques as peeling the whole graph, far fewer enumerations.

Ties between equally large maximal cliques go to the tighter one, then to the one with the
smallest member index (:func:`.central_image.rank_key`), so the result never depends on
networkx's enumeration order.

Maximal-clique enumeration is exponential in the worst case (Tomita et al., 2006); a threshold
whose enumeration passes ``deadline`` returns ``None`` (the paper's 30 s per threshold, after
which it moves on), and so does one whose graph would have more than ``max_edges`` edges (it could
not finish in the cap and would only exhaust memory building the graph).
"""
from __future__ import annotations

import heapq
import time
from typing import Callable

import networkx as nx
import numpy as np

from .central_image import rank_key


class _Deadline:
    def __init__(self, deadline: float, check_interrupt: Callable[[], None] | None):
        self.deadline = deadline
        self.check_interrupt = check_interrupt

    def expired(self) -> bool:
        if self.check_interrupt is not None:
            self.check_interrupt()
        return time.monotonic() > self.deadline


def _best_clique(graph: nx.Graph, nodes: set[int], descriptors: np.ndarray, clock: _Deadline):
    """The best maximal clique of the component ``nodes`` (largest, then by rank_key), or None."""
    if len(nodes) == 1:
        return sorted(nodes)
    largest: list[list[int]] = []
    for count, clique in enumerate(nx.find_cliques(graph.subgraph(nodes))):
        if count % 64 == 0 and clock.expired():
            return None
        if not largest or len(clique) > len(largest[0]):
            largest = [clique]
        elif len(clique) == len(largest[0]):
            largest.append(clique)
    return sorted(min(largest, key=lambda c: rank_key(descriptors, c)))


def peel_cliques(similarity: np.ndarray, descriptors: np.ndarray, phi: float, deadline: float,
                 check_interrupt: Callable[[], None] | None = None,
                 max_edges: int = 2_000_000) -> list[list[int]] | None:
    """Partition all images into cliques of the graph sim ≥ φ, largest first. Returns the cliques
    (each sorted), or None if the threshold ran past ``deadline`` (time.monotonic) or its graph
    has more than ``max_edges`` edges."""
    clock = _Deadline(deadline, check_interrupt)
    n = similarity.shape[0]
    adjacency = similarity >= phi
    np.fill_diagonal(adjacency, False)
    if int(adjacency.sum()) // 2 > max_edges:
        return None
    rows, cols = np.nonzero(adjacency)
    del adjacency
    upper = rows < cols
    graph = nx.Graph()
    graph.add_nodes_from(range(n))
    graph.add_edges_from(zip(rows[upper].tolist(), cols[upper].tolist()))
    del rows, cols, upper
    if clock.expired():
        return None

    heap: list[tuple] = []

    def push(component: set[int]) -> bool:
        clique = _best_clique(graph, component, descriptors, clock)
        if clique is None:
            return False
        heapq.heappush(heap, (rank_key(descriptors, clique), clique, component))
        return True

    for component in nx.connected_components(graph):
        if not push(set(component)):
            return None
    cliques = []
    while heap:
        _, clique, component = heapq.heappop(heap)
        cliques.append(clique)
        rest = component.difference(clique)
        for sub in nx.connected_components(graph.subgraph(rest)):
            if not push(set(sub)):
                return None
    return cliques
