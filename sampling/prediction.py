"""Conversions between what a diffusion model predicts and eps.

All families are written as x_t = a * x0 + b * eps:
- variance preserving (DDPM / SD1.x / SDXL): a = sqrt(ᾱ_t), b = sqrt(1 - ᾱ_t);
- ComfyUI's k-diffusion form of the same models (EPS, V_PREDICTION): a = 1, b = sigma;
- rectified flow (SD3, FLUX, ComfyUI's CONST): a = 1 - t, b = t.

Model guidance (Eq. 13) must be combined in eps space so that k * eps_base means what the paper
means for every family; these functions take a model's output into eps and back.
"""
from __future__ import annotations

import torch

PREDICTIONS = ("eps", "x0", "v", "flow")


def eps_from_denoised(x_t: torch.Tensor, denoised: torch.Tensor, a, b) -> torch.Tensor:
    """eps = (x_t - a * x0) / b."""
    return (x_t - a * denoised) / b


def denoised_from_eps(x_t: torch.Tensor, eps: torch.Tensor, a, b) -> torch.Tensor:
    """x0 = (x_t - b * eps) / a; the inverse of :func:`eps_from_denoised`."""
    return (x_t - b * eps) / a


def eps_from_prediction(kind: str, x_t: torch.Tensor, pred: torch.Tensor, a, b) -> torch.Tensor:
    """eps from a raw model output of the given ``kind``.

    - ``eps``: the output is eps.
    - ``x0``: the output is the clean sample; eps = (x_t - a x0) / b.
    - ``v``: v-prediction of a variance-preserving model (a² + b² = 1), v = a eps - b x0, so
      eps = b x_t + a v.
    - ``flow``: rectified-flow velocity (a + b = 1), v = eps - x0, so eps = x_t + a v.
    """
    if kind == "eps":
        return pred
    if kind == "x0":
        return eps_from_denoised(x_t, pred, a, b)
    if kind == "v":
        return b * x_t + a * pred
    if kind == "flow":
        return x_t + a * pred
    raise ValueError(f"unknown prediction kind {kind!r}; expected one of {PREDICTIONS}")
