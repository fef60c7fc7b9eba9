"""ComfyUI adapter of the masked LoRA branch (:mod:`..sampling.lora_branch`): turns the weight
patches a fine-tuned ModelPatcher adds over its base into per-module deltas, and marks the rows of
each forward that belong to the fine-tune from ComfyUI's ``cond_or_uncond`` (one flag per batch
chunk), read by an APPLY_MODEL wrapper."""
from __future__ import annotations

import contextlib
import logging

import torch

import comfy.lora
import comfy.utils
import comfy.weight_adapter

from ..modelfiles import lora_scale
from ..sampling.lora_branch import DenseDelta, LowRankDelta, MaskedBranches, rows_of_chunks


def extra_patches(base, finetuned) -> dict:
    """The weight patches ``finetuned`` adds on top of ``base`` (two clones of one ModelPatcher)."""
    extra = {}
    for key, patches in finetuned.patches.items():
        below = base.patches.get(key, [])
        if len(patches) < len(below) or any(a is not b for a, b in zip(patches, below)):
            raise ValueError(f"the fine-tuned model is not the base model plus patches ({key}); "
                             "load it as a full checkpoint")
        if len(patches) > len(below):
            extra[key] = patches[len(below):]
    missing = [key for key in base.patches if key not in finetuned.patches]
    if missing:
        raise ValueError(f"the base model has a patch the fine-tuned one lacks ({missing[0]})")
    return extra


def _low_rank(module, patch) -> LowRankDelta | None:
    """The patch as up @ down * scale if it is a plain LoRA, as ComfyUI would add it: on the whole
    weight, or on a run of a Linear's output rows (ComfyUI's ``offset`` (0, start, count): a LoRA
    of one projection of a fused weight, as diffusers spells FLUX and SD3 LoRAs)."""
    strength, adapter, strength_model, offset, function = patch
    if not isinstance(adapter, comfy.weight_adapter.LoRAAdapter):
        return None
    up, down, alpha, mid, dora_scale, reshape = adapter.weights
    if any(v is not None for v in (mid, dora_scale, reshape, function)) or strength_model != 1.0:
        return None
    rows = None
    if offset is not None:
        if offset[0] != 0 or not isinstance(module, torch.nn.Linear):
            return None
        rows = (offset[1], offset[2])
    return LowRankDelta(up, down, strength * lora_scale(alpha, down.shape[0]), rows=rows)


def _deltas(module, key: str, patches: list) -> list:
    low = [_low_rank(module, p) for p in patches]
    if not key.endswith(".bias") and all(d is not None for d in low):
        return low
    logging.info("FineXtract: %s gets the LoRA as a dense weight change (%s): exact, as costly as the "
                 "layer itself", key, "a bias" if key.endswith(".bias") else
                 "not a plain low-rank patch: LoHa, LoKr, DoRA, a diff or a sliced convolution")
    original = getattr(module, key.rsplit(".", 1)[1]).detach().float()
    delta = comfy.lora.calculate_weight(patches, original.clone(), key) - original
    return [DenseDelta(delta, bias=key.endswith(".bias"))]


class FineTuneBranch:
    """The fine-tune's patches as masked branches on a shared base model; rows flagged ``ft_flag``
    in ``cond_or_uncond`` (0 = the guider's first cond, the caption) get them."""

    def __init__(self, patches: dict, ft_flag: int = 0):
        self.patches, self.ft_flag = patches, ft_flag
        self.branches: MaskedBranches | None = None

    def route(self, executor, x, *args, **kwargs):
        """APPLY_MODEL wrapper: selects this forward's fine-tuned rows."""
        options = kwargs.get("transformer_options") or next(
            a for a in args if isinstance(a, dict) and "cond_or_uncond" in a)
        rows = rows_of_chunks(options["cond_or_uncond"], x.shape[0], self.ft_flag)
        with self.branches.selecting(rows, x.shape[0], x.device):
            return executor(x, *args, **kwargs)

    @contextlib.contextmanager
    def installed(self, model):
        """Branches on ``model`` (a BaseModel, weights as loaded) while the block runs."""
        deltas = {}
        for key, patches in self.patches.items():
            module = comfy.utils.get_attr(model, key.rsplit(".", 1)[0])
            deltas.setdefault(module, []).extend(_deltas(module, key, patches))
        self.branches = MaskedBranches(deltas)
        try:
            with self.branches.installed():
                yield self
        finally:
            self.branches = None
