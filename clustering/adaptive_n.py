"""Adaptive N (ours, beyond the paper): stop generating once the extraction has stopped changing.

The paper fixes N = 50·N0 generations before clustering. Memorised images come back as repeated
samples, so once every memorised image has appeared a few times, more samples only re-confirm the
same clusters. This rule decides *from the generated images alone* when that point has come: an
auditor deciding when to stop may not have the training images, so nothing here sees them.

Every N0 images (one check), the images so far are clustered as the full audit would cluster them
(:func:`.threshold_search.cluster` into N0, fast mode) and the **confident centres** are kept: the
central images of clusters of at least two images whose mean internal SSCD similarity is ≥ φ (a
repeated image; singletons and loose clusters are the generator's ordinary variety). Two centre
sets are **the same** when every centre of each has an SSCD identity ≥ φ with some centre of the
other. The run **stops** at the first check n ≥ ``min_per_image``·N0 whose centre set is the
same as at each of the previous ``patience`` checks (nothing new in the last ``patience``·N0
images); else it runs to the fixed N. Images have per-image seeds, so the first n images of a run
*are* the n-image run: the rule can be evaluated after the fact on a fixed run's descriptors
(:func:`stop_point`), and its verdict at n never depends on images after n.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .threshold_search import cluster


@dataclass(frozen=True)
class StopRule:
    phi: float = 0.6
    """SSCD identity: a cluster this tight is a confident centre; centres this similar are one."""
    patience: int = 5
    """Stop when the centre set has not changed over the last ``patience`` checks (·N0 images)."""
    min_per_image: int = 10
    """Never stop before ``min_per_image``·N0 images."""

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        return (f"stop at the first n >= {self.min_per_image}·N0 (checked every N0) where the confident centres "
                f"(clusters of >= 2 images with mean SSCD >= {self.phi:g}) are the same (identity >= {self.phi:g}) "
                f"as at each of the previous {self.patience} checks")


def confident_centres(descriptors: np.ndarray, n0: int, phi: float) -> np.ndarray:
    """Descriptors (k × d, k ≤ N0) of the central images of the clusters of ≥ 2 images with mean
    internal similarity ≥ ``phi``, after clustering ``descriptors`` into N0."""
    result = cluster(descriptors, n0)
    keep = [i for i, size, sim in zip(result.indices, result.sizes, result.mean_similarities)
            if size >= 2 and sim >= phi]
    return np.asarray(descriptors, dtype=np.float32)[keep]


def same_centres(a: np.ndarray, b: np.ndarray, phi: float) -> bool:
    """Every centre of ``a`` has one of ``b`` at similarity ≥ ``phi``, and the other way round."""
    if len(a) == 0 or len(b) == 0:
        return len(a) == len(b)
    s = a @ b.T
    return bool((s.max(axis=1) >= phi).all() and (s.max(axis=0) >= phi).all())


def stop_point(descriptors, n0: int, rule: StopRule = StopRule()) -> dict:
    """Where ``rule`` stops a run whose generated images, in generation order, have
    ``descriptors`` (n × d, L2-normalised; n = the fixed run's N, the most the rule may use).
    Returns ``n`` (images used), ``stopped`` (before the fixed N), ``saved`` (fraction of the
    fixed N not generated) and ``centres`` (confident centres per check)."""
    x = np.asarray(descriptors, dtype=np.float32)
    n_max = len(x)
    if not 1 <= n0 <= n_max:
        raise ValueError(f"need 1 <= N0 <= n, got N0 = {n0}, n = {n_max}")
    history, counts = [], []
    for n in range(n0, n_max + 1, n0):
        history.append(confident_centres(x[:n], n0, rule.phi))
        counts.append(len(history[-1]))
        if (n >= rule.min_per_image * n0 and len(history) > rule.patience
                and all(same_centres(history[-1], earlier, rule.phi) for earlier in history[-1 - rule.patience:-1])):
            return {"n": n, "stopped": n < n_max, "saved": 1 - n / n_max, "centres": counts}
    return {"n": n_max, "stopped": False, "saved": 0.0, "centres": counts}
