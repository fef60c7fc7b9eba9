"""Planted-cluster descriptors: the synthetic ground truth for the clustering step (§4.3).

N0 "training images" are random unit vectors in 512-d (nearly orthogonal, like unrelated SSCD
descriptors, cosine ≈ 0 ± 0.05); each generated image is a copy of one of them plus Gaussian noise,
re-normalised. With noise σ the within-cluster similarity is ≈ 1 / (1 + σ²), so σ = 0.8 gives ≈ 0.6,
the paper's loose-extraction level. Cluster sizes are unequal (multinomial), as memorisation is.
"""
from __future__ import annotations

import numpy as np


def planted_clusters(n0: int, n: int, noise: float = 0.8, dim: int = 512, seed: int = 0):
    """Returns (descriptors float32 n×dim, labels int n, centres float32 n0×dim), sorted by label,
    every cluster non-empty."""
    if n < n0:
        raise ValueError(f"need n >= n0, got n={n}, n0={n0}")
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n0, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = np.sort(np.concatenate([np.arange(n0), rng.integers(0, n0, n - n0)]))
    x = centres[labels] + rng.normal(size=(n, dim)) * noise / np.sqrt(dim)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), labels, centres.astype(np.float32)


def planted_partition(labels: np.ndarray) -> list[tuple[int, ...]]:
    """The ground-truth clusters as sorted index tuples, in a canonical order."""
    return sorted(tuple(np.nonzero(labels == k)[0].tolist()) for k in np.unique(labels))
