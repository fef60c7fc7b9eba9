"""From N generated images to N0 extracted ones (paper §4.3), in bounded memory.

N = 50·N0 images at SDXL size do not fit in RAM as one batch (6,900 for a 138-image LoRA), so
images are never held all at once: ``fetch(indices) -> images`` produces a chunk (e.g. decodes
those latents with the VAE, or slices an IMAGE batch), the chunk is embedded and dropped, and only
the 512-float descriptors stay. After clustering, the caller fetches just the N0 chosen indices.
Peak memory: latents + N descriptors + one chunk of images (``bench/clustering.py`` measures it).

Optional fast pre-filter: the distilled SSCD student embeds all N images, the ``keep`` images in
the densest neighbourhoods (mean similarity to their ``k`` nearest, where repeated samples of a
memorised image pile up) are re-embedded with full SSCD, and only those are clustered. The two
models' descriptors are never compared with each other.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from .descriptors import Descriptor, centre
from .neighbours import neighbour_table
from .threshold_search import ClusterResult, cluster

Fetch = Callable[[Sequence[int]], object]
"""``fetch(indices)`` returns those generated images (a ComfyUI IMAGE batch or a list)."""


def embed_in_chunks(fetch: Fetch, indices: Sequence[int], descriptor: Descriptor, chunk_size: int = 8,
                    progress: Callable[[int, int], None] | None = None,
                    check_interrupt: Callable[[], None] | None = None) -> torch.Tensor:
    """Descriptors of the images ``indices``, fetching ``chunk_size`` at a time and keeping none."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    indices = list(indices)
    out = torch.zeros((len(indices), 512))
    for start in range(0, len(indices), chunk_size):
        if check_interrupt is not None:
            check_interrupt()
        chunk = indices[start:start + chunk_size]
        out[start:start + len(chunk)] = descriptor.embed(fetch(chunk), batch_size=chunk_size)
        if progress is not None:
            progress(start + len(chunk), len(indices))
    return out


def dense_candidates(descriptors: torch.Tensor, keep: int, k: int = 5) -> list[int]:
    """The ``keep`` images with the highest mean similarity to their ``k`` nearest neighbours
    (ties to the smaller index), sorted by index."""
    n = descriptors.shape[0]
    if keep >= n:
        return list(range(n))
    _, sims = neighbour_table(descriptors.numpy(), max(1, min(k, n - 1)))
    density = sims.mean(axis=1)
    order = np.lexsort((np.arange(n), -density))
    return sorted(order[:keep].tolist())


@dataclass
class Extraction:
    """The clustering result with ``result.indices`` / ``clusters`` in generated-image indices,
    the raw SSCD descriptors of the clustered images (``candidates``, all N without pre-filter),
    and their mean raw descriptor (the centring reference)."""
    result: ClusterResult
    n_generated: int
    candidates: list[int]
    descriptors: torch.Tensor
    reference_mean: torch.Tensor
    descriptor: str
    centred: bool
    prefilter: str | None

    def summary(self) -> dict:
        return {**self.result.to_dict(), "descriptor": self.descriptor, "centred": self.centred,
                "prefilter": self.prefilter, "n_generated": self.n_generated, "n_clustered": len(self.candidates),
                "reference_mean": self.reference_mean.tolist()}

    def extracted_descriptors(self) -> torch.Tensor:
        """Raw descriptors of the N0 extracted images, in ``result.indices`` order (what the
        metrics score against the training set)."""
        return self.descriptors[[self.candidates.index(i) for i in self.result.indices]]


def extract(fetch: Fetch, n: int, n0: int, descriptor: Descriptor, mode: str = "fast",
            time_cap: float = 30.0, centred: bool = False, student: Descriptor | None = None,
            keep: int | None = None, chunk_size: int = 8,
            progress: Callable[[str, int, int], None] | None = None,
            check_interrupt: Callable[[], None] | None = None) -> Extraction:
    """Embed the N images (optionally pre-filtered by ``student`` down to ``keep``), cluster them
    into N0 cliques and pick the central images. ``progress(stage, done, total)`` with stage in
    ``prefilter``, ``embed``, ``cluster``. With ``centred``, clustering runs on descriptors centred
    by the generated set's mean."""
    if n < 1:
        raise ValueError("no generated images to cluster")
    if not 1 <= n0 <= n:
        raise ValueError(f"N0 must be between 1 and the number of generated images ({n}), got {n0}")

    def stage(name):
        return None if progress is None else (lambda done, total: progress(name, done, total))

    candidates = list(range(n))
    prefilter = None
    if student is not None:
        keep = keep if keep is not None else min(n, 10 * n0)
        if not n0 <= keep:
            raise ValueError(f"the pre-filter must keep at least N0 = {n0} images, got {keep}")
        rough = embed_in_chunks(fetch, candidates, student, chunk_size, stage("prefilter"), check_interrupt)
        candidates = dense_candidates(rough, keep)
        del rough
        prefilter = f"{student.name}: kept {len(candidates)} of {n} densest, re-embedded with full SSCD"
    raw = embed_in_chunks(fetch, candidates, descriptor, chunk_size, stage("embed"), check_interrupt)
    mean = raw.mean(0)
    used = centre(raw, mean) if centred else raw
    result = cluster(used, n0, mode=mode, time_cap=time_cap, progress=stage("cluster"),
                     check_interrupt=check_interrupt)
    result.indices = [candidates[i] for i in result.indices]
    result.clusters = [[candidates[i] for i in c] for c in result.clusters]
    return Extraction(result, n, candidates, raw, mean, descriptor.name, centred, prefilter)
