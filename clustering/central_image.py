"""The central image of a clique and the ranking of cliques (paper §4.3).

Central image: x̂ = argmax_x (1/|A|) Σ_{x_q ∈ A} sim(x, x_q). For unit descriptors this is also the
member nearest to the clique's mean descriptor (what the official code computes), since
mean_q sim(x, x_q) = x · mean(A). Ties go to the smallest image index.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def central_image(descriptors: np.ndarray, members: Sequence[int]) -> int:
    """Index (into ``descriptors``) of the member with the highest mean similarity to the clique."""
    members = np.asarray(sorted(members))
    scores = descriptors[members] @ descriptors[members].mean(axis=0)
    return int(members[int(np.argmax(scores))])  # argmax returns the first maximum: smallest index


def mean_internal_similarity(descriptors: np.ndarray, members: Sequence[int]) -> float:
    """Mean similarity over the clique's distinct pairs (1.0 for a single image)."""
    members = np.asarray(members)
    if len(members) < 2:
        return 1.0
    block = descriptors[members] @ descriptors[members].T
    n = len(members)
    return float((block.sum() - np.trace(block)) / (n * (n - 1)))


def rank_key(descriptors: np.ndarray, members: Sequence[int]) -> tuple:
    """Sort key of a clique, best first: larger, then tighter (higher mean internal similarity,
    rounded to 1e-6 so float noise never decides), then smallest member index. More samples
    agreeing on one image is the evidence of memorisation (Carlini et al., 2023), hence size first."""
    return (-len(members), -round(mean_internal_similarity(descriptors, members), 6), min(members))
