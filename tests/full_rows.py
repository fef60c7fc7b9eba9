"""The neighbour table computed the way it was before ``clustering/neighbours.py``: every row in
full (a block of rows times all descriptors, torch), ``torch.topk``, then sorted by similarity
descending and index ascending. The reference of tests/test_clustering_neighbours.py and the
baseline that ``bench/clustering.py`` times beside the new table.

One addition to the old code: ``torch.topk`` chooses freely among images tied at the k-th place,
so a row where it left out a tied image of smaller index is chosen again by (similarity
descending, index ascending), the rule the new table documents. Costs one comparison pass per row.
"""
from __future__ import annotations

import math

import numpy as np
import torch


def full_rows_table(descriptors: np.ndarray, k: int, block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """(indices int64 N×k, similarities float32 N×k), self excluded."""
    x = torch.from_numpy(np.ascontiguousarray(descriptors, dtype=np.float32))
    n = x.shape[0]
    k = min(k, n - 1)
    indices = np.zeros((n, max(k, 0)), dtype=np.int64)
    sims = np.zeros((n, max(k, 0)), dtype=np.float32)
    if k < 1:
        return indices, sims
    for start in range(0, n, block):
        stop = min(n, start + block)
        s = x[start:stop] @ x.T
        s[torch.arange(stop - start), torch.arange(start, stop)] = -math.inf
        values, idx = torch.topk(s, k, dim=1)
        values, idx, s = values.numpy(), idx.numpy(), s.numpy()
        kth = values[:, -1:]
        for row in np.flatnonzero((s == kth).sum(axis=1) > (values == kth).sum(axis=1)):
            chosen = np.lexsort((np.arange(n), -s[row]))[:k]
            values[row], idx[row] = s[row, chosen], chosen
        order = np.lexsort((idx, -values), axis=1)
        indices[start:stop] = np.take_along_axis(idx, order, axis=1)
        sims[start:stop] = np.take_along_axis(values, order, axis=1)
    return indices, sims
