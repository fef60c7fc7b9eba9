"""Deterministic DDIM (η = 0) for the miniature world, driven by FineXtract's noise combinations,
and DPM-Solver++(2M) beside it (fewer model evaluations for the same images: :data:`SAMPLERS`).

The paper samples with DDIM, 50 steps (Appendix A). Here the eps fed to each DDIM step is
:func:`finextract.sampling.guidance.combine` of the fine-tuned model's conditional prediction with
the base model's unconditional one (model guidance, Eq. 13), the fine-tuned model's own
unconditional one (CFG, Eq. 8) or nothing (Direct), and N images come from
:func:`finextract.sampling.driver.generate`, so image i depends only on (seed, i).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from ..sampling import driver, guidance
from .model import LATENT_SHAPE, MiniPipeline

EpsFn = Callable[[torch.Tensor, int], torch.Tensor]
"""``eps(x_t, t)`` for a batch x_t at one discrete timestep t."""


def ddim_timesteps(steps: int, train_steps: int = 1000) -> list[int]:
    """``steps`` evenly spaced timesteps from train_steps - 1 down to 0."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return torch.linspace(train_steps - 1, 0, steps).round().long().tolist()


@torch.no_grad()
def ddim_sample(eps_fn: EpsFn, x: torch.Tensor, alphas_cumprod: torch.Tensor, steps: int = 50,
                check_interrupt: Callable[[], None] | None = None,
                step_done: Callable[[], None] | None = None) -> torch.Tensor:
    """Denoise ``x`` (pure noise at t = T) with η = 0 DDIM; returns the clean latents.

    Each step predicts x0 = (x_t - √(1-ᾱ_t) eps) / √ᾱ_t and moves to the next timestep along the
    same eps; the last step lands on x0 itself (ᾱ = 1). ``step_done()`` is called after each step."""
    ts = ddim_timesteps(steps, len(alphas_cumprod))
    for i, t in enumerate(ts):
        if check_interrupt is not None:
            check_interrupt()
        a_t = alphas_cumprod[t]
        a_prev = alphas_cumprod[ts[i + 1]] if i + 1 < len(ts) else torch.tensor(1.0)
        eps = eps_fn(x, t)
        x0 = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
        x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
        if step_done is not None:
            step_done()
    return x


@torch.no_grad()
def dpmpp_2m_sample(eps_fn: EpsFn, x: torch.Tensor, alphas_cumprod: torch.Tensor, steps: int = 20,
                    check_interrupt: Callable[[], None] | None = None,
                    step_done: Callable[[], None] | None = None) -> torch.Tensor:
    """Denoise ``x`` with DPM-Solver++(2M) (Lu et al. 2022; k-diffusion's ``sample_dpmpp_2m``) on
    :func:`ddim_timesteps`: one model evaluation per step, as DDIM, but each step extrapolates the
    clean-image estimate from this step's and the previous one's (second order in the log-SNR
    step h), where DDIM holds it constant. The first step has no previous estimate and the last
    lands on the clean estimate itself (ᾱ = 1), both exactly DDIM's update."""
    ts = ddim_timesteps(steps, len(alphas_cumprod))
    abar = [alphas_cumprod[t] for t in ts] + [torch.tensor(1.0)]
    alpha, sigma = [a.sqrt() for a in abar], [(1 - a).sqrt() for a in abar]
    lam = [torch.log(a / s) for a, s in zip(alpha[:-1], sigma[:-1])]
    previous, h_previous = None, None
    for i, t in enumerate(ts):
        if check_interrupt is not None:
            check_interrupt()
        x0 = (x - sigma[i] * eps_fn(x, t)) / alpha[i]
        if i + 1 == len(ts):
            x = x0
        else:
            h = lam[i + 1] - lam[i]
            d = x0 if previous is None else x0 + (x0 - previous) * h / (2 * h_previous)
            x = sigma[i + 1] / sigma[i] * x - alpha[i + 1] * torch.expm1(-h) * d
            h_previous = h
        previous = x0
        if step_done is not None:
            step_done()
    return x


SAMPLERS = {"ddim": ddim_sample, "dpmpp_2m": dpmpp_2m_sample}
"""Samplers of the same ``eps_fn`` interface, one model evaluation (of each branch) per step."""


def guided_eps(fine_tuned: MiniPipeline, base: MiniPipeline | None, caption: str, method: str,
               w: float, k: float = 0.0) -> EpsFn:
    """The eps function of one extraction method (``guidance.METHODS``) for ``caption``.

    ``finextract`` pairs the fine-tuned model's eps(x, c) with the *base* model's eps(x, ∅)
    (Eq. 13, weight ``w`` = w', correction ``k``); ``cfg`` pairs it with the fine-tuned model's own
    eps(x, ∅) (Eq. 8, scale ``w``); ``direct`` uses eps(x, c) alone."""
    if method not in guidance.METHODS:
        raise ValueError(f"unknown guidance method {method!r}; expected one of {guidance.METHODS}")
    cond = fine_tuned.encode_text([caption])
    other_model = base if method == "finextract" else fine_tuned
    if method == "finextract" and base is None:
        raise ValueError("finextract needs the base (pretrained) model")
    uncond = other_model.encode_text([""]) if method != "direct" else None

    def eps(x: torch.Tensor, t: int) -> torch.Tensor:
        tt = torch.full((len(x),), float(t))
        e_cond = fine_tuned.eps(x, tt, cond.expand(len(x), -1, -1))
        e_other = other_model.eps(x, tt, uncond.expand(len(x), -1, -1)) if uncond is not None else None
        return guidance.combine(method, e_cond, e_other, w, k)
    return eps


@torch.no_grad()
def sample_latents(fine_tuned: MiniPipeline, base: MiniPipeline | None, caption: str, method: str,
                   indices: Sequence[int], seed: int, w: float = 3.0, k: float = 0.0,
                   steps: int = 50, batch_size: int = 50,
                   progress: Callable[[int, int], None] | None = None, sampler: str = "ddim") -> torch.Tensor:
    """Latents (len(indices), 3, 64, 64) — the images in [-1, 1] — of images ``indices`` of the run ``seed``.

    ``progress(done, total)`` counts denoising steps of single images (total = images × steps)
    and is called after every DDIM step, not once per chunk: a chunk of 50 images takes ~15 s on
    two CPU cores, too long between updates for a person watching. ``sampler``: a :data:`SAMPLERS` name."""
    solve = SAMPLERS[sampler]
    eps = guided_eps(fine_tuned, base, caption, method, w, k)
    indices = list(indices)
    total, done = len(indices) * steps, [0]

    def sample(noise: torch.Tensor, _seeds) -> torch.Tensor:
        def step_done() -> None:
            done[0] += len(noise)
            progress(done[0], total)
        return solve(eps, noise, fine_tuned.alphas_cumprod, steps, step_done=None if progress is None else step_done)
    return driver.generate(indices, batch_size, seed, LATENT_SHAPE, sample)
