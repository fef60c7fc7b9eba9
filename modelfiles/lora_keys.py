"""LoRA files: their key spellings, how much of one a model actually took, and the weight change
one layer makes (its scale, its shape, the change itself: the one place that knows how
``up``, ``down``, ``alpha`` and LoCon's ``mid`` combine).

A host maps LoRA tensor names to model weights with a key map (name → weight key). A LoRA whose
names match nothing is silently ignored by ComfyUI (it only logs them); guidance between the base
and an unchanged "fine-tune" then extracts nothing. So the loader counts what applied and refuses
a LoRA of which less than :data:`MIN_APPLIED_FRACTION` of the tensors found a layer.
"""
from __future__ import annotations

import math
import re
from typing import Iterable, Mapping

import torch

MIN_APPLIED_FRACTION = 0.5
"""A LoRA applies if at least this share of its tensors reached a model weight. A LoRA made for the
model family in use applies entirely; one made for another family matches no key, or only by
accident a few, so one half separates the two with a wide margin either side."""


def with_diffusers_aliases(key_map: Mapping[str, str]) -> dict[str, str]:
    """Add the PEFT-era diffusers spellings of attention layers to a key map.

    ComfyUI 0.8.0 maps diffusers attention projections only in the attention-processor form
    (``unet.….attn2.processor.to_k``, from diffusers < 0.21). diffusers >= 0.21 saves LoRAs
    through PEFT with the module path itself (``unet.….attn2.to_k``, ``….to_out.0``), optionally
    under PEFT's ``base_model.model.`` wrapper. Both name the same weight, so alias them.
    """
    out = dict(key_map)
    for name, target in key_map.items():
        if ".processor.to_" not in name:
            continue
        plain = name.replace(".processor.to_", ".to_")
        if plain.endswith(".to_out"):
            plain += ".0"
        for alias in (plain, "base_model.model." + plain.removeprefix("unet.")):
            out.setdefault(alias, target)
    return out


def _module_prefixes(tensor_key: str) -> Iterable[str]:
    """Candidate module names of a LoRA tensor: every prefix cut at a dot, and the name before a
    diffusers ``_lora.`` suffix (``to_k_lora.down.weight``)."""
    for i, ch in enumerate(tensor_key):
        if ch == ".":
            yield tensor_key[:i]
    cut = tensor_key.find("_lora.")
    if cut > 0:
        yield tensor_key[:cut]


def applied_tensors(tensor_keys: Iterable[str], applied_modules: set[str]) -> list[str]:
    """The tensors of a LoRA file that belong to a module name that reached a model weight."""
    return [k for k in tensor_keys if any(p in applied_modules for p in _module_prefixes(k))]


TEXT_ENCODER_LORA_KEY = re.compile(r"^(lora_te\d?_|lora_prior_te_|text_encoders?(_\d+)?\.)")
"""The spellings of LoRA tensors for a text encoder: the names ComfyUI's ``model_lora_keys_clip``
maps (kohya ``lora_te_``/``lora_te1_``/``lora_te2_``/``lora_te3_``, Stable Cascade's
``lora_prior_te_``, diffusers ``text_encoder.``/``text_encoder_2.``, generic ``text_encoders.``)."""


def text_encoder_tensors(tensor_keys: Iterable[str]) -> list[str]:
    """The tensors of a LoRA file spelled for a text encoder: what a LoRA cannot apply when the
    model has no text encoder to patch (a diffusion-model-only base, its CLIP the user's)."""
    return [k for k in tensor_keys if TEXT_ENCODER_LORA_KEY.match(k)]


def low_rank_change(up_shape, down_shape, mid_shape=None) -> tuple[int, int] | None:
    """(rows, columns) of the change ``up @ down`` a LoRA adds to a weight flattened to a matrix,
    as ComfyUI's LoRA adapter computes it (LoCon's ``mid`` carries the conv kernel); None when the
    ranks do not chain. A weight fits when its (shape[0], product of the rest) is this: otherwise
    ComfyUI only logs the failed merge, or the sampler fails mid-run on ``size of tensor a``."""
    rank = math.prod(up_shape[1:])
    if down_shape[0] != rank:
        return None
    if mid_shape is None:
        return up_shape[0], math.prod(down_shape[1:])
    if tuple(mid_shape[:2]) != (rank, rank):
        return None
    return up_shape[0], down_shape[1] * math.prod(mid_shape[2:])


def lora_scale(alpha, rank: int) -> float:
    """The factor of a LoRA layer's ``up @ down`` at strength 1: ``alpha / rank`` (kohya files
    carry an ``alpha`` per layer), 1 without one (diffusers and PEFT files have none; their alpha
    lives in a side config). ``alpha`` may be a number or a one-value tensor."""
    return 1.0 if alpha is None else float(alpha) / rank


def lora_delta(up: torch.Tensor, down: torch.Tensor, alpha, mid: torch.Tensor | None = None,
               strength: float = 1.0) -> torch.Tensor:
    """The weight change of one LoRA layer, as hosts apply it: ``strength · lora_scale(alpha,
    rank) · up @ down`` in float32 (ComfyUI's order: the two factors multiplied first),
    convolution factors flattened, a LoCon ``mid`` (Tucker) factor contracted in between. Shaped
    ``(out, in · kernel)`` (:func:`low_rank_change`); reshape it to the weight to merge it."""
    rank = down.shape[0]
    up2, down2 = up.reshape(up.shape[0], -1).float(), down.reshape(rank, -1).float()
    if mid is None:
        delta = up2 @ down2
    else:
        delta = torch.einsum("mn...,im,nj->ij...", mid.float(), up2, down2).reshape(up2.shape[0], -1)
    return delta * (strength * lora_scale(alpha, rank))


def as_matrix(shape) -> tuple[int, int]:
    """A weight's shape flattened as a LoRA changes it: (rows, product of the rest)."""
    return shape[0], math.prod(shape[1:])


LORA_FAMILIES = (
    # (family, a pattern only that family's LoRA keys contain): checked in this order
    ("Qwen-Image", re.compile(r"(img|txt)_mlp[._]net[._]|(img|txt)_mod[._]1")),
    ("Wan", re.compile(r"(^|[._])blocks[._]\d+[._](cross_attn|self_attn)[._]")),
    ("FLUX", re.compile(r"(double|single)_blocks[._]\d+[._]|single_transformer_blocks[._]\d+[._]|"
                        r"transformer_blocks[._]\d+[._](attn[._]add_q_proj|ff_context)")),
    ("SD3", re.compile(r"joint_blocks[._]\d+[._]")),
    ("SDXL", re.compile(r"lora_te2_|text_encoder_2[._]|input_blocks[._][78][._]1[._]transformer_blocks[._][1-9]")),
)
"""Spellings that tell which model family a LoRA was made for, when it does not fit the base: the
trainers' key names (kohya ``lora_unet_double_blocks_…``, diffusers ``transformer.…``, PEFT) carry
the family's own block names. Only consulted to explain a refusal; None when no pattern matches."""


def lora_family(tensor_keys: Iterable[str]) -> tuple[str, str] | tuple[None, None]:
    """(family, the first key that shows it) of the first family in :data:`LORA_FAMILIES` one of
    whose patterns a key matches, or (None, None)."""
    keys = sorted(tensor_keys)
    for family, pattern in LORA_FAMILIES:
        for key in keys:
            if pattern.search(key):
                return family, key
    return None, None
