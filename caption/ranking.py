"""Weight-space caption inversion, Appendix A.1–A.3: rank a vocabulary by how strongly the
fine-tuning's weight change responds to each token.

Both objectives are a norm ‖A e‖ of a unit-normalised embedding e (the paper's "if all e_i are
normalized", Eq. 17), so each is stored as a factor C with AᵀA = C Cᵀ and scored as ‖e C‖: scoring the
whole vocabulary is one [V, N] × [N, m] product (m ≤ N, and tiny for Eq. 19).

* Eq. 17 (single-token caption): F(e) = ‖(β⁺ − β⁻) e‖ over all K/V layers stacked, i.e.
  AᵀA = Σ_k Δ_kᵀ Δ_k.
* Eq. 19 (multi-token caption): F(e) = ‖(PCA[β⁺] − PCA[β⁻]) e‖ with PCA the rank-r approximation
  (r = 1 in the paper: "approximate it using a rank-one matrix") of the stacked weights, taken of β⁺
  and of β⁻ separately and *then* subtracted, because the paper found PCA(β⁺ − β⁻) fails.
  Uncentred (a truncated SVD), as the paper's rank-one form L̄ ē₀ implies.

Which embeddings: Appendix A's e are the text embeddings as they enter the cross-attention, i.e. the
text encoder's output for a prompt. :func:`contextual_vocabulary` builds those for every token (one
single-token prompt per token: cheap for a miniature encoder, minutes for CLIP-L on CPU); when only
the input token-embedding table is used, :class:`Vocabulary` says so in ``kind``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from .families import TextStream
from .weight_delta import TextReadingLayers

OBJECTIVES = ("eq17", "eq19")


@dataclass(frozen=True)
class Objective:
    """F(e) = ‖ê C‖ with ê = e/‖e‖; ``equation`` names the paper's form. For SD3/FLUX, e is the
    encoder row mapped by ``stream`` into the rows the K/V weights read (:mod:`.families`)."""

    factor: torch.Tensor  # [N, m]
    equation: str
    stream: TextStream | None = None

    def __call__(self, embeddings: torch.Tensor) -> torch.Tensor:
        """F of each encoder row of ``embeddings`` [..., C] → [...]; differentiable."""
        if self.stream is not None:
            embeddings = self.stream(embeddings)
        unit = embeddings / embeddings.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return (unit @ self.factor.to(unit.dtype)).norm(dim=-1)


def _gram_factor(gram: torch.Tensor, rtol: float = 1e-7, drop: int = 0) -> torch.Tensor:
    """C with C Cᵀ = gram (symmetric PSD), dropping directions below ``rtol`` of the largest and
    the ``drop`` largest."""
    values, vectors = torch.linalg.eigh(gram.double())
    keep = values > values[-1].clamp_min(0) * rtol
    if drop:
        keep[-drop:] = False
    return (vectors[:, keep] * values[keep].sqrt()).float()


def _top_singular(stacked_grams: torch.Tensor, blocks: Sequence[torch.Tensor], rank: int):
    """The top ``rank`` singular triplets (U, S, V) of the row-stacked ``blocks`` via their Gram
    matrix (N × N, so the stack [ΣH, N] is never formed)."""
    values, vectors = torch.linalg.eigh(stacked_grams)
    v = vectors[:, -rank:].flip(-1)
    s = values[-rank:].flip(-1).clamp_min(0).sqrt()
    u = torch.cat([b.double() @ v for b in blocks]) / s.clamp_min(1e-30)
    return u, s, v


def _gram(blocks: Sequence[torch.Tensor]) -> torch.Tensor:
    n = blocks[0].shape[1]
    gram = torch.zeros(n, n, dtype=torch.float64)
    for b in blocks:
        b = b.double()
        gram += b.T @ b
    return gram


def single_token_objective(layers: TextReadingLayers, deflate: int = 0) -> Objective:
    """Eq. 17: F(e) = ‖(β⁺ − β⁻) e‖ over the stacked K/V layers (needs only the deltas).

    ``deflate`` (ours, not the paper's; 0 = Eq. 17 exactly) drops the ``deflate`` strongest
    right-singular directions of the stacked change first. Why: a fine-tune sees BOS and ~70 padding
    rows per caption, and their shared component dominates Δβ's row space, so the top direction is
    "any prompt", not this caption. Measured on the padded toy world (tests' TinyCausalEncoder with 13
    of 16 rows padding, 6 planted captions): a planted token in the top 10 for 0/6 with Eq. 17, 6/6
    with ``deflate=1``, 5/6 with 2."""
    return Objective(_gram_factor(_gram(layers.deltas), drop=deflate),
                     "eq17" if not deflate else f"eq17-deflate{deflate}", layers.stream)


def principal_difference_objective(layers: TextReadingLayers, components: int = 1) -> Objective:
    """Eq. 19: F(e) = ‖(PCA_r[β⁺] − PCA_r[β⁻]) e‖, PCA_r the rank-``components`` truncated SVD of
    the stacked weights. Since D = U⁺S⁺V⁺ᵀ − U⁻S⁻V⁻ᵀ, ‖D e‖² = zᵀ (MᵀM) z with z = [V⁺ V⁻]ᵀ e and
    M = [U⁺S⁺, −U⁻S⁻], so the factor is [V⁺ V⁻] · chol-like(MᵀM): N × 2r."""
    after, before = layers.after, layers.before
    u_a, s_a, v_a = _top_singular(_gram(after), after, components)
    u_b, s_b, v_b = _top_singular(_gram(before), before, components)
    m = torch.cat([u_a * s_a, -u_b * s_b], dim=1)
    w = torch.cat([v_a, v_b], dim=1)
    inner = _gram_factor(m.T @ m).double()
    return Objective((w @ inner).float(), "eq19", layers.stream)


def objective(layers: TextReadingLayers, equation: str, components: int = 1, deflate: int = 0) -> Objective:
    if equation == "eq17":
        return single_token_objective(layers, deflate)
    if equation == "eq19":
        return principal_difference_objective(layers, components)
    raise ValueError(f"unknown objective {equation!r}; one of {OBJECTIVES}")


@dataclass(frozen=True)
class Vocabulary:
    """One embedding row per candidate token; ``kind`` says which embedding it is
    ("contextual": encoder output at the token's position, as the cross-attention sees it;
    "raw token embeddings": the encoder's input table, an approximation)."""

    token_ids: torch.Tensor  # [V] long
    vectors: torch.Tensor  # [V, N]
    kind: str


def contextual_vocabulary(encode: Callable[[torch.Tensor], torch.Tensor], token_embedding: torch.Tensor,
                          token_ids: torch.Tensor, batch_size: int = 512,
                          check_interrupt: Callable[[], None] | None = None) -> Vocabulary:
    """Each token as a one-token prompt through ``encode`` (a :class:`.encoders.PromptEncoder`'s
    ``encode``: [B, L, D] input embeddings → [B, L, N] context rows), keeping its own row."""
    rows = []
    with torch.no_grad():
        for start in range(0, len(token_ids), batch_size):
            if check_interrupt is not None:
                check_interrupt()
            ids = token_ids[start:start + batch_size]
            rows.append(encode(token_embedding[ids].unsqueeze(1))[:, 0].float())
    return Vocabulary(token_ids, torch.cat(rows), "contextual")


def vocabulary_scores(objective_fn: Objective, vocabulary: Vocabulary, chunk: int = 8192) -> torch.Tensor:
    """F of every row of the vocabulary [V], in chunks (a CLIP-size table at once would double
    its memory)."""
    with torch.no_grad():
        return torch.cat([objective_fn(vocabulary.vectors[i:i + chunk].float())
                          for i in range(0, len(vocabulary.vectors), chunk)])


def rank_vocabulary(objective_fn: Objective, vocabulary: Vocabulary, top_k: int = 20,
                    chunk: int = 8192) -> list[tuple[int, float]]:
    """The ``top_k`` (token id, F) pairs of the vocabulary, best first."""
    scores = vocabulary_scores(objective_fn, vocabulary, chunk)
    best = scores.topk(min(top_k, len(scores)))
    return [(int(vocabulary.token_ids[i]), float(s)) for s, i in zip(best.values, best.indices)]
