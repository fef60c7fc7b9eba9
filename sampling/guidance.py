"""The three ways FineXtract's paper forms a noise estimate, all in eps space.

Every function takes eps predictions (the noise a denoiser believes is in x_t) and returns one.
Working in eps space matters for model guidance: the weights of Eq. 13 sum to 1 + k, not 1, so
combining x0 ("denoised") predictions with the same weights would mean something else. Callers
convert whatever their model predicts with :mod:`.prediction` first.
"""
from __future__ import annotations

import torch

METHODS = ("finextract", "cfg", "direct")
"""Method names shared by the nodes, the CLI and the benchmarks."""


def direct(eps_ft_cond: torch.Tensor) -> torch.Tensor:
    """Direct text-to-image baseline (paper §5, "Direct"): the fine-tuned model with the caption,
    no guidance."""
    return eps_ft_cond


def cfg(eps_cond: torch.Tensor, eps_uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance, Eq. 8: eps(c) + (w' - 1) * (eps(c) - eps(∅)), both from the same
    (fine-tuned) model. ``scale`` is w'."""
    return eps_cond + (scale - 1.0) * (eps_cond - eps_uncond)


def model_guidance(eps_ft_cond: torch.Tensor, eps_base_uncond: torch.Tensor, w: float,
                   k: float) -> torch.Tensor:
    """Model guidance with the training caption, Eq. 13:

        eps_q(x, c) = eps_ft(x, c) + (w' - 1) * (eps_ft(x, c) - eps_base(x, ∅)) + k * eps_base(x, ∅)

    The fine-tuned model sees the caption, the pretrained model sees the empty prompt. ``w`` is
    w' (paper default 3 for a full fine-tune, 5 for LoRA), ``k`` the correction (paper -0.02).
    """
    return eps_ft_cond + (w - 1.0) * (eps_ft_cond - eps_base_uncond) + k * eps_base_uncond


def model_guidance_uncond(eps_ft: torch.Tensor, eps_base: torch.Tensor, w: float) -> torch.Tensor:
    """Caption-free model guidance, Eq. 6: eps_ft + (w - 1) * (eps_ft - eps_base), both models
    unconditioned (w = 1/λ of Eq. 3)."""
    return eps_ft + (w - 1.0) * (eps_ft - eps_base)


def combine(method: str, eps_ft_cond: torch.Tensor, eps_other: torch.Tensor | None, w: float,
            k: float = 0.0) -> torch.Tensor:
    """Dispatch on the method name.

    ``eps_other`` is what the method pairs with the fine-tuned conditional prediction: for
    ``finextract`` the *base* model's unconditional prediction, for ``cfg`` the *fine-tuned*
    model's unconditional prediction (plain CFG, no k, as the paper's baseline), for ``direct``
    nothing. The caption-free form (Eq. 6) is ``finextract`` with k = 0 and an empty caption.
    """
    if method == "finextract":
        return model_guidance(eps_ft_cond, eps_other, w, k)
    if method == "cfg":
        return cfg(eps_ft_cond, eps_other, w)
    if method == "direct":
        return direct(eps_ft_cond)
    raise ValueError(f"unknown guidance method {method!r}; expected one of {METHODS}")


def k_correction_denoised(x_t: torch.Tensor, a, denoised_base_uncond: torch.Tensor, k: float) -> torch.Tensor:
    """Eq. 13's ``k * eps_base(x, ∅)`` term in x0 form, for x_t = a * x0 + b * eps:

        x0 = (x_t - b * eps) / a, so adding k * eps_base to eps adds -(b / a) * k * eps_base
        = k * (x0_base - x_t / a)   (since b * eps_base = x_t - a * x0_base).

    Where a = 0 (a flow model's first step at sigma = 1: x_t is pure noise) it has no finite x0
    form and is left out at that step."""
    a = torch.as_tensor(a, dtype=x_t.dtype, device=x_t.device)
    inv_a = torch.where(a == 0, torch.zeros_like(a), 1.0 / torch.where(a == 0, torch.ones_like(a), a))
    return k * (denoised_base_uncond - inv_a * x_t) * (a != 0)


def guided_denoised(method: str, x_t: torch.Tensor, a, denoised_ft_cond: torch.Tensor,
                    denoised_other: torch.Tensor | None, w: float, k: float = 0.0) -> torch.Tensor:
    """The guided x0 estimate from x0 ("denoised") predictions, as ComfyUI models return them,
    for x_t = a * x0 + b * eps.

    It equals converting both predictions to eps (eps = (x_t - a x0) / b), combining them with
    :func:`combine` and converting back (x0 = (x_t - b eps) / a), but never divides by b: CFG's
    weights sum to 1, so Eq. 8 and the w' part of Eq. 13 are the same affine combination of x0
    predictions, and Eq. 13's k term is :func:`k_correction_denoised`.
    """
    if method == "direct":
        return direct(denoised_ft_cond)
    mixed = combine(method, denoised_ft_cond, denoised_other, w, 0.0)
    if method != "finextract" or k == 0.0:
        return mixed
    return mixed + k_correction_denoised(x_t, a, denoised_other, k)
