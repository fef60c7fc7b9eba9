"""The audit metrics of paper §3.2: Average Similarity (Eq. 1) and A-ESR@τ (Eq. 2).

With S[i, j] = sim(X0_i, X̂_j) (training image i, extracted image j, SSCD cosine):
  AS        = (1/|X0|) Σ_i max_j S[i, j]                       (Eq. 1)
  A-ESR_τ   = (1/|X0|) Σ_i 1(max_j S[i, j] > τ)                (Eq. 2, strictly greater)
Both are over *training* images: each asks how well the extracted set covers it. Paper defaults
τ = 0.6 (loose) and 0.7 (strict); the SSCD authors read > 0.75 as a copy (90 % precision on their
benchmark), reported beside them since the paper's thresholds were set with another SSCD model
and preprocessing.

Scores are reported raw and, on request, centred (subtract a reference set's mean descriptor and
re-normalise, the SSCD authors' recommendation, :func:`.descriptors.centre`).
"""
from __future__ import annotations

from typing import Sequence

import torch

from .descriptors import centre

DEFAULT_TAUS = (0.6, 0.7)
SSCD_COPY_THRESHOLD = 0.75


def similarity_matrix(training: torch.Tensor, extracted: torch.Tensor) -> torch.Tensor:
    """S[i, j] = cosine(training_i, extracted_j) for L2-normalised descriptors."""
    if training.shape[0] == 0:
        raise ValueError("the training set is empty: nothing to score against")
    if extracted.shape[0] == 0:
        raise ValueError("the extracted set is empty: nothing to score")
    return training.float() @ extracted.float().T


def best_matches(similarity: torch.Tensor) -> tuple[list[int], list[float]]:
    """For every training image, its best-matching extracted image (first on ties) and score."""
    scores, indices = similarity.max(dim=1)
    return indices.tolist(), scores.tolist()


def average_similarity(similarity: torch.Tensor) -> float:
    """Eq. 1: mean over training images of the best similarity to any extracted image."""
    return float(similarity.max(dim=1).values.mean())


def extraction_success_rate(similarity: torch.Tensor, tau: float) -> float:
    """Eq. 2: fraction of training images whose best similarity is strictly above τ."""
    return float((similarity.max(dim=1).values > tau).float().mean())


def score(similarity: torch.Tensor, taus: Sequence[float] = DEFAULT_TAUS) -> dict:
    """All figures of one similarity matrix: AS, A-ESR@τ per τ, the copy-threshold rate, and per
    training image its best match."""
    indices, scores = best_matches(similarity)
    return {
        "AS": average_similarity(similarity),
        "A-ESR": {f"{tau:g}": extraction_success_rate(similarity, tau) for tau in taus},
        "copy_rate@0.75": extraction_success_rate(similarity, SSCD_COPY_THRESHOLD),
        "best_match": indices,
        "best_score": scores,
    }


def evaluate(training: torch.Tensor, extracted: torch.Tensor, taus: Sequence[float] = DEFAULT_TAUS,
             reference_mean: torch.Tensor | None = None, centred: bool = False) -> dict:
    """Raw scores, plus centred ones when ``centred``: centring uses ``reference_mean`` (the mean
    raw descriptor of all generated images, when the clustering step passed it on), else the mean
    of the training and extracted descriptors together."""
    taus = sorted({float(t) for t in taus})
    result = {"taus": taus, "copy_threshold": SSCD_COPY_THRESHOLD,
              "raw": score(similarity_matrix(training, extracted), taus)}
    if centred:
        mean = reference_mean if reference_mean is not None else torch.cat([training, extracted]).mean(0)
        result["centred"] = score(similarity_matrix(centre(training, mean), centre(extracted, mean)), taus)
        result["centring_reference"] = ("generated images" if reference_mean is not None
                                        else "training + extracted images")
    return result
