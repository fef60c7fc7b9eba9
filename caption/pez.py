"""Hard-prompt extraction, Appendix A.4 / Algorithm 1: find a real prompt c maximising F(E(c))
(Eq. 20), F the weight-space objective of Eq. 19 (or 17), E the frozen text encoder.

The prompt space is discrete, so (after Wen et al., PEZ) a continuous prompt ê is kept, projected
each step onto the nearest real tokens ĉ = E⁻¹(ê), and the gradient of F at the *projected* prompt
updates the continuous one. Two update rules, since the sources disagree:

* ``"pgd"`` — the paper's "L2-PGD": ê ← ê + α δ/‖δ‖₂, each token's row stepped by α along its
  L2-normalised gradient (Algorithm 1's update with the step length fixed);
* ``"adamw"`` — PEZ as published: AdamW (lr 0.1, weight decay 0.1) on ê.

F(E(c)) of a prompt is the mean of F over context rows, each unit-normalised inside F as for the
vocabulary ranking: ``rows="sequence"`` takes all W = 77 rows of E(c) (BOS, prompt, EOS, padding:
Appendix A.2's E(c), whose padding rows summarise the whole prompt in a causal CLIP), ``"prompt"``
only the L rows at the prompt's own positions (several times cheaper: BOS + prompt only). The best projected prompt seen is kept: Algorithm 1 returns the last,
but the projected score is not monotone, and keeping the best costs nothing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .encoders import PromptEncoder
from .ranking import Objective

OPTIMISERS = ("pgd", "adamw")
ROWS = ("sequence", "prompt")


@dataclass(frozen=True)
class HardPrompt:
    token_ids: list[int]
    score: float
    iteration: int
    """The iteration at which this projected prompt was first seen."""


def prompt_score(encoder: PromptEncoder, objective_fn: Objective, prompt_embeds: torch.Tensor,
                 rows: str = "sequence") -> torch.Tensor:
    """F(E(c)) for a batch of prompts [B, L, D] → [B]: mean F over the context rows ``rows``."""
    if rows not in ROWS:
        raise ValueError(f"unknown rows {rows!r}; one of {ROWS}")
    context = encoder.encode_sequence(prompt_embeds) if rows == "sequence" else encoder.encode(prompt_embeds)
    return objective_fn(context).mean(-1)


def hard_prompt(encoder: PromptEncoder, objective_fn: Objective, length: int = 3, iterations: int = 1000,
                lr: float | None = None, optimiser: str = "pgd", seed: int = 0,
                allowed: torch.Tensor | None = None, rows: str = "sequence",
                progress: Callable[[int, int], None] | None = None,
                check_interrupt: Callable[[], None] | None = None) -> HardPrompt:
    """Algorithm 1. ``allowed``: candidate token ids (default: the whole table; exclude the special
    tokens). ``lr`` defaults to 0.1 for both rules (PEZ's value; for PGD it is the step length in
    embedding units). ``progress(done, total)`` is called every iteration, ``check_interrupt()``
    may raise to stop."""
    if optimiser not in OPTIMISERS:
        raise ValueError(f"unknown optimiser {optimiser!r}; one of {OPTIMISERS}")
    if length < 1 or iterations < 0:
        raise ValueError("length must be ≥ 1 and iterations ≥ 0")
    lr = 0.1 if lr is None else lr
    table = encoder.token_embedding
    if allowed is None:
        allowed = torch.arange(table.shape[0])
    generator = torch.Generator().manual_seed(seed)
    start = allowed[torch.randint(len(allowed), (length,), generator=generator)]
    soft = table[start].clone().requires_grad_(True)
    adamw = torch.optim.AdamW([soft], lr=lr, weight_decay=0.1) if optimiser == "adamw" else None

    best = HardPrompt(start.tolist(), float("-inf"), 0)
    seen: dict[tuple[int, ...], float] = {}
    for i in range(iterations + 1):  # the last pass only scores Algorithm 1's final projection
        if check_interrupt is not None:
            check_interrupt()
        ids = encoder.nearest_tokens(soft.detach(), allowed)
        hard = table[ids].clone().requires_grad_(True)
        with torch.enable_grad():
            score = prompt_score(encoder, objective_fn, hard.unsqueeze(0), rows)[0]
        key = tuple(ids.tolist())
        if key not in seen:
            seen[key] = float(score.detach())
            if seen[key] > best.score:
                best = HardPrompt(list(key), seen[key], i)
        if i == iterations:
            break
        (grad,) = torch.autograd.grad(score, hard)
        if adamw is not None:
            adamw.zero_grad()
            soft.grad = -grad  # AdamW minimises; F is maximised
            adamw.step()
        else:
            with torch.no_grad():
                soft += lr * grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        if progress is not None:
            progress(i + 1, iterations)
    return best
