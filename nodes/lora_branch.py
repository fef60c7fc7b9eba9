"""The masked LoRA branch: a base + LoRA pair evaluated in ONE batched forward of the base weights.

FineXtract (Eq. 13) needs eps_ft(x, c) and eps_base(x, ∅) at every step. CFG needs two
evaluations too and ComfyUI batches them as [cond, uncond] rows of one forward. For a LoRA
fine-tune, ft = W + ΔW with ΔW = up·down·(alpha/rank) small-rank, so instead of holding a second
copy of the base weights (the paper's implementation: two UNets, 1.31× memory) or re-patching
weights between the two halves at every step, we keep the base weights untouched and add the
LoRA's output, up(down(x)), as a side branch computed only for the batch rows that belong to the
fine-tuned model. Extra cost: a rank-r matmul on half the batch per LoRA layer (r/d of the layer),
extra memory: the LoRA factors. Patches that are not plain LoRA (LoHa, LoKr, DoRA, diffs…) fall
back to a dense ΔW branch for that layer, computed once.

Which rows are fine-tuned comes from ComfyUI's ``cond_or_uncond`` list (one entry per batch chunk)
read by an APPLY_MODEL wrapper around each forward; the branch hooks are plain
``register_forward_hook`` on the patched Linear/Conv modules, installed for the duration of one
sampling run only.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

import comfy.lora
import comfy.utils
import comfy.weight_adapter


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
    for key in base.patches:
        if key not in finetuned.patches:
            raise ValueError(f"the base model has a patch the fine-tuned one lacks ({key})")
    return extra


def _low_rank(patch):
    """(up, down, scale) if ``patch`` is a plain LoRA ComfyUI would add as up @ down * scale."""
    strength, adapter, strength_model, offset, function = patch
    if not isinstance(adapter, comfy.weight_adapter.LoRAAdapter):
        return None
    up, down, alpha, mid, dora_scale, reshape = adapter.weights
    if mid is not None or dora_scale is not None or reshape is not None or offset is not None \
            or function is not None or strength_model != 1.0:
        return None
    rank = down.shape[0]
    return up, down, strength * (alpha / rank if alpha is not None else 1.0)


class _Branch:
    """ΔW's contribution to one module's output, for a subset of rows."""

    def __init__(self, module: torch.nn.Module, key: str, patches: list):
        self.module, self.key, self.patches = module, key, patches
        self.is_bias = key.endswith(".bias")
        if not isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            raise ValueError(f"cannot apply the fine-tune's patch on {key} ({type(module).__name__}) "
                             "as a branch; load the fine-tune as a full checkpoint")
        low = [_low_rank(p) for p in patches]
        self.factors = low if not self.is_bias and all(f is not None for f in low) else None
        self.cache = {}

    def _dense(self):
        original = getattr(self.module, "bias" if self.is_bias else "weight").detach().float()
        return comfy.lora.calculate_weight(self.patches, original.clone(), self.key) - original

    def _prepared(self, x):
        slot = (x.device, x.dtype)
        if slot not in self.cache:
            if self.factors is not None:
                shape = self.module.weight.shape
                self.cache[slot] = [(up.reshape(shape[0], -1, *([1] * (len(shape) - 2))).to(*slot),
                                     down.reshape(down.shape[0], *shape[1:]).to(*slot), scale)
                                    for up, down, scale in self.factors]
            else:
                self.cache[slot] = self._dense().to(*slot)
        return self.cache[slot]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        m, prepared = self.module, self._prepared(x)
        conv = isinstance(m, torch.nn.Conv2d)
        if self.is_bias:
            return prepared.view(1, -1, 1, 1) if conv else prepared
        if self.factors is None:
            return F.conv2d(x, prepared, None, m.stride, m.padding, m.dilation, m.groups) if conv \
                else F.linear(x, prepared)
        out = 0
        for up, down, scale in prepared:
            if conv:
                out = out + scale * F.conv2d(F.conv2d(x, down, None, m.stride, m.padding, m.dilation), up)
            else:
                out = out + scale * F.linear(F.linear(x, down), up)
        return out


class MaskedLoraBranch:
    """Routes the fine-tune's patches to the batch rows of chunks flagged ``ft_flag``."""

    def __init__(self, patches: dict, ft_flag: int = 0):
        self.patches, self.ft_flag = patches, ft_flag
        self.rows: torch.Tensor | None = None
        self.batch = 0

    def route(self, executor, x, *args, **kwargs):
        """APPLY_MODEL wrapper: marks the rows of this forward that belong to the fine-tune."""
        options = kwargs.get("transformer_options") or next(
            a for a in args if isinstance(a, dict) and "cond_or_uncond" in a)
        flags = options["cond_or_uncond"]
        per = x.shape[0] // len(flags)
        rows = [r for i, f in enumerate(flags) if f == self.ft_flag for r in range(i * per, (i + 1) * per)]
        self.rows = torch.tensor(rows, device=x.device, dtype=torch.long) if rows else None
        self.batch = x.shape[0]
        try:
            return executor(x, *args, **kwargs)
        finally:
            self.rows = None

    def _hook(self, branch: _Branch):
        def hook(module, inputs, output):
            if self.rows is None:
                return output
            x = inputs[0]
            if x.shape[0] != self.batch:
                raise RuntimeError(f"{branch.key} sees batch {x.shape[0]}, the model forward "
                                   f"{self.batch}: this architecture folds the batch, so the LoRA "
                                   "branch cannot tell rows apart; load the fine-tune as a full checkpoint")
            delta = branch(x.index_select(0, self.rows))
            return output.index_add_(0, self.rows, delta.to(output.dtype).expand(
                len(self.rows), *output.shape[1:]))
        return hook

    @contextlib.contextmanager
    def installed(self, model: torch.nn.Module):
        """Hooks on the patched modules of ``model`` (a BaseModel) while the block runs."""
        handles = []
        try:
            for key, patches in self.patches.items():
                module = comfy.utils.get_attr(model, key.rsplit(".", 1)[0])
                handles.append(module.register_forward_hook(self._hook(_Branch(module, key, patches))))
            yield self
        finally:
            for handle in handles:
                handle.remove()
