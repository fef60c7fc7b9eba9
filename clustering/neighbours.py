"""Each image's k most similar images, exactly, from half the similarity matrix in O(N·k) memory.

The fast clustering mode (:mod:`.greedy_peeling`) and the pre-filter
(:func:`.extraction.dense_candidates`) need, for every image, its k nearest images by SSCD
similarity. Computing every row in full (what this replaced) computes every product twice
although sim(i, j) = sim(j, i), then selects with ``torch.topk`` among all N² entries: at platform
N (N = 50,000 images, k = 200, one thread) 42 s of CPU, 12 of them in ``torch.topk``
(cProfile; ``bench/clustering.py`` times both tables side by side).

Here each pair of row blocks I ≤ J is multiplied once: the block X_I·X_Jᵀ serves the rows of I and,
transposed, the rows of J (N²/2 dot products). The diagonal blocks come first and give every row
its best k among its own block, and a floor: the k-th best similarity it has seen. An entry below
its row's floor can never enter that row's top k (k entries already beat it), so each later block
is screened with one comparison per entry and only the few that pass (a fraction of about k/m
when m columns have been seen) are appended to their row's short list; a full list is cut back to
its best k, which raises its floor.

The result equals full rows: the dot products are the same float32 numbers as a full row's (the
tests compare bit for bit; :func:`_products` says why short blocks are padded), and the
selection is exact: the k largest similarities, ties at the k-th place going to the smaller index
(``torch.topk`` left that choice to its implementation). Each entry is kept as one uint64 key,
similarity (order-preserving bits, inverted) above the column index, so "k best, ties to the
smaller index" is just "k smallest keys": one ``np.partition``, no index arrays to carry along,
no tie to break.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch


def neighbour_table(descriptors: np.ndarray, k: int, block: int = 2048,
                    check_interrupt: Callable[[], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each image's ``k`` nearest images (self excluded), sorted by similarity descending with
    ties to the smaller index: (indices int64 N×k, similarities float32 N×k)."""
    x = torch.from_numpy(np.ascontiguousarray(descriptors, dtype=np.float32))
    n = x.shape[0]
    k = min(k, n - 1)
    if k < 1:
        return np.zeros((n, 0), np.int64), np.zeros((n, 0), np.float32)
    best = _RunningBest(n, k, spare=max(64, k // 4))
    starts = range(0, n, block)
    pairs = [(i, i) for i in starts] + [(i, j) for i in starts for j in starts if i < j]
    for i, j in pairs:
        if check_interrupt is not None:
            check_interrupt()
        sims = _products(x[i:i + block], x[j:j + block])
        if i == j:
            np.fill_diagonal(sims, -np.inf)
        best.screen(i, j, sims)
    return best.table()


def _products(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """a·bᵀ in float32. MKL sums a product of fewer than 16 rows, or of one column, in another
    order (last bits differ; measured with torch 2.13's MKL 2024.2), so shorter blocks are padded
    with zero rows: every similarity is then the same float32 number whichever block computes
    it, in either order, and the same as in a full row of a block of at least 16 rows."""
    rows, cols = a.shape[0], b.shape[0]
    a, b = _at_least_16(a), _at_least_16(b)
    return np.ascontiguousarray((a @ b.T).numpy()[:rows, :cols])


def _at_least_16(a: torch.Tensor) -> torch.Tensor:
    return a if a.shape[0] >= 16 else torch.cat([a, a.new_zeros(16 - a.shape[0], a.shape[1])])


class _RunningBest:
    """Per row, the keys of its best entries seen so far (unsorted, at most ``k + spare``, unused
    slots ``_EMPTY``) and its floor (the k-th best similarity once it has held k entries, else -inf)."""

    def __init__(self, n: int, k: int, spare: int):
        self.k, self.cap = k, k + spare
        self.keys = np.full((n, self.cap), _EMPTY, np.uint64)
        self.fill = np.zeros(n, np.int64)
        self.floor = np.full(n, -np.inf, np.float32)

    def screen(self, i: int, j: int, sims: np.ndarray):
        """Offer the block ``sims`` (rows i…, columns j…, self at -inf) to its rows and, if i ≠ j,
        transposed to its columns' rows (a diagonal block holds both orders of each pair).
        Comparing each entry with its row's and its column's floor finds the few worth a closer
        look. A diagonal block comes first for its rows: if wide enough, its k-th best per row
        is their first floor."""
        height, width = sims.shape
        rows = slice(i, i + height)
        if i == j and width > self.k:
            self.floor[rows] = np.partition(sims, width - self.k, axis=1)[:, width - self.k]
        passing = sims >= self.floor[rows, None]
        if i != j:
            passing |= sims >= self.floor[None, j:j + width]
        flat = np.flatnonzero(passing)
        values = sims.ravel()[flat]
        r, c = np.divmod(flat, width)
        keep = values >= self.floor[i + r]  # self (-inf) can pass a -inf floor: it is never kept
        self._add(i + r[keep], _keys(values[keep], (j + c[keep]).astype(np.uint64)))
        if i != j:
            keep = np.flatnonzero(values >= self.floor[j + c])
            keep = keep[np.argsort(c[keep].astype(np.int16 if width <= 2**15 else np.int64), kind="stable")]
            self._add(j + c[keep], _keys(values[keep], (i + r[keep]).astype(np.uint64)))

    def _add(self, rows: np.ndarray, keys: np.ndarray):
        """Append keys to their rows (``rows`` ascending); a row that would overflow is merged
        with its new keys and cut back to its best k, raising its floor."""
        if not len(rows):
            return
        first = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
        ids, counts = rows[first], np.diff(np.r_[first, len(rows)])
        slot = self.fill[rows] + np.arange(len(rows)) - np.repeat(first, counts)
        over = self.fill[ids] + counts > self.cap
        fits = ~np.repeat(over, counts)
        self.keys.ravel()[rows[fits] * self.cap + slot[fits]] = keys[fits]
        self.fill[ids[~over]] += counts[~over]
        if not over.any():
            return
        full, spill = ids[over], ~fits
        merged = np.full((len(full), int((self.fill[full] + counts[over]).max())), _EMPTY, np.uint64)
        merged[:, :self.cap] = self.keys[full]
        merged[np.repeat(np.arange(len(full)), counts[over]), slot[spill]] = keys[spill]
        merged.partition(self.k - 1, axis=1)
        self.keys[full] = _EMPTY
        self.keys[full, :self.k] = merged[:, :self.k]
        self.fill[full], self.floor[full] = self.k, _similarities(merged[:, self.k - 1])

    def table(self, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """The final top k of every row, sorted by similarity descending, ties to the smaller index."""
        n = len(self.fill)
        indices = np.zeros((n, self.k), np.int64)
        sims = np.zeros((n, self.k), np.float32)
        for start in range(0, n, chunk):
            keys = np.sort(self.keys[start:start + chunk], axis=1)[:, :self.k]
            indices[start:start + chunk] = keys & 0xFFFFFFFF
            sims[start:start + chunk] = _similarities(keys)
        return indices, sims


_EMPTY = np.iinfo(np.uint64).max


def _keys(sims: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """uint64 keys ordered like (similarity descending, column ascending). -0.0 counts as 0.0, as
    in a float comparison."""
    bits = (sims + np.float32(0.0)).view(np.uint32)  # -0.0 + 0.0 = +0.0
    ordered = np.where(bits >> 31, ~bits, bits | np.uint32(0x80000000))  # IEEE order as unsigned order
    return ((~ordered).astype(np.uint64) << np.uint64(32)) | columns


def _similarities(keys: np.ndarray) -> np.ndarray:
    """The similarities that :func:`_keys` encoded."""
    ordered = ~(keys >> np.uint64(32)).astype(np.uint32)
    return np.where(ordered >> 31, ordered & np.uint32(0x7FFFFFFF), ~ordered).view(np.float32)
