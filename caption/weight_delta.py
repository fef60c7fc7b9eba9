"""The layers caption inversion reads: β⁻ and β⁺ of Appendix A, the first trainable linear layers that
see the text embedding, i.e. the cross-attention key and value projections (``attn2.to_k``,
``attn2.to_v``), before and after fine-tuning.

Their weight change carries the caption because of Eq. 14–15: the gradient of a bias-free linear
layer is (upstream gradient)ᵀ × (its input), so every update of β_k lies in the row space spanned by
the caption's text embeddings. Two ways to get the pair:

* a full fine-tune (DreamBooth): two state dicts, compared key by key;
* a LoRA: Δ = up @ down × alpha / rank × strength per layer, in kohya
  (``lora_unet_…_attn2_to_k.lora_down/lora_up/alpha``), diffusers (``….attn2.to_k.lora.down/up``),
  older diffusers (``….attn2.processor.to_k_lora.down/up``) or PEFT (``….attn2.to_k.lora_A/lora_B``)
  spelling; β⁺ = β⁻ + Δ when the base weights are given (Eq. 19 needs them; Eq. 17 needs only Δ).

When none of these layers changed (a LoRA on convolutions only, a text-encoder-only fine-tune) the
weights say nothing about the caption, and :class:`NoTextLayerChangeError` says so instead of
ranking noise.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterable

import torch

from ..modelfiles import lora_delta

TEXT_READING = re.compile(r"attn2[._](?:processor[._])?to_[kv](?:_lora)?(?=$|[._])")
"""A cross-attention key/value projection in SD1.x/SD2/SDXL UNets, in ldm, diffusers and kohya
spelling (and the miniature world, which keeps the same names)."""

_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "base_model.model.", "unet.", "lora_unet_",
             "transformer.", "model.")
_LORA_PARTS = {  # key suffix → (part, spelling)
    ".lora_down.weight": ("down", "kohya"), ".lora_up.weight": ("up", "kohya"),
    ".lora.down.weight": ("down", "diffusers"), ".lora.up.weight": ("up", "diffusers"),
    "_lora.down.weight": ("down", "diffusers (old)"), "_lora.up.weight": ("up", "diffusers (old)"),
    ".lora_A.weight": ("down", "PEFT"), ".lora_B.weight": ("up", "PEFT"),
    ".lora_A.default.weight": ("down", "PEFT"), ".lora_B.default.weight": ("up", "PEFT"),
    ".alpha": ("alpha", None),
}


class NoTextLayerChangeError(ValueError):
    """The text-reading layers are identical before and after: the weights reveal no caption."""


def layer_name(key: str) -> str:
    """A spelling-independent name for the layer a key belongs to: prefixes, the ``.weight`` /
    LoRA suffixes and diffusers' ``processor``/``_lora`` wrappers dropped, every separator an
    underscore (kohya flattens dots to underscores, so this is the only common form)."""
    for suffix in _LORA_PARTS:
        if key.endswith(suffix):
            key = key[: -len(suffix)]
            break
    else:
        key = key.removesuffix(".weight")
    for prefix in _PREFIXES:
        if key.startswith(prefix):
            key = key[len(prefix):]
            break
    key = key.replace(".processor.", ".").replace("processor_", "")
    return key.replace(".", "_")


def _family(key: str) -> str:
    """Which part of the model a key belongs to, for the message when nothing text-reading changed."""
    if TEXT_READING.search(key):
        return "cross-attention K/V (text-reading)"
    if re.search(r"(^|[._])(lora_te\d?|te\d?|text_encoder\d?|text_model|cond_stage_model|clip_[lg]|conditioner)[._]", key):
        return "text encoder"
    if re.search(r"conv|resnets|(in|out)_layers|skip_connection|samplers|proj_in|proj_out", key):
        return "convolutions / resnets"
    if re.search(r"attn1|to_q|to_out", key):
        return "other attention"
    return "other"


@dataclass
class TextReadingLayers:
    """β⁻ (``before``, ``None`` when only a LoRA's deltas are known) and β⁺ − β⁻ (``deltas``) for
    every cross-attention K/V layer, each [H_k, N] with N the context width."""

    names: list[str]
    deltas: list[torch.Tensor]
    before: list[torch.Tensor] | None
    source: str

    @property
    def after(self) -> list[torch.Tensor]:
        if self.before is None:
            raise ValueError(f"{self.source}: base weights unknown, β⁺ = β⁻ + Δ cannot be formed "
                             "(Eq. 19 needs them; Eq. 17 works on the deltas alone)")
        return [b + d for b, d in zip(self.before, self.deltas)]

    @property
    def context_width(self) -> int:
        return self.deltas[0].shape[1]

    def changed(self, rtol: float = 1e-6) -> list[str]:
        """Names of the layers whose change is more than ``rtol`` of their weight (or nonzero)."""
        out = []
        for i, (name, delta) in enumerate(zip(self.names, self.deltas)):
            scale = self.before[i].norm() if self.before is not None else 1.0
            if delta.norm() > rtol * scale:
                out.append(name)
        return out

    def describe(self) -> str:
        changed = self.changed()
        return (f"{self.source}: {len(changed)} of {len(self.names)} cross-attention K/V layers changed "
                f"(context width {self.context_width})")


def _no_change(source: str, touched: Counter) -> NoTextLayerChangeError:
    what = ", ".join(f"{n} {family}" for family, n in touched.most_common()) or "nothing"
    return NoTextLayerChangeError(
        f"{source}: the cross-attention key/value layers (the first layers that read the text, "
        f"Appendix A) did not change, so the weights reveal no caption. Changed instead: {what}. "
        "Typical causes: a LoRA on convolutions only, or a text-encoder-only fine-tune. Use the "
        "training metadata, or no caption.")


def from_state_dicts(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor],
                     source: str = "full fine-tune pair", rtol: float = 1e-6,
                     changed_keys: Callable[[], Iterable[str]] | None = None) -> TextReadingLayers:
    """The K/V layers of a full fine-tune: same keys in both state dicts. Raises
    :class:`NoTextLayerChangeError` if none changed, naming what did change: the keys that differ
    between the two dicts, or ``changed_keys()`` when the dicts hold only the K/V layers."""
    keys = sorted(k for k in before if TEXT_READING.search(k) and k.endswith("weight")
                  and before[k].ndim == 2)
    if not keys:
        raise ValueError(f"{source}: no cross-attention key/value weights (attn2.to_k/to_v) in the base")
    missing = [k for k in keys if k not in after]
    if missing:
        raise ValueError(f"{source}: the fine-tuned weights lack {len(missing)} cross-attention layers "
                         f"of the base (e.g. {missing[0]}): mismatched model families?")
    for k in keys:
        if after[k].shape != before[k].shape:
            raise ValueError(f"{source}: {k} is {tuple(before[k].shape)} in the base but "
                             f"{tuple(after[k].shape)} fine-tuned: mismatched model families")
    b = [before[k].detach().float() for k in keys]
    layers = TextReadingLayers([layer_name(k) for k in keys],
                               [after[k].detach().float() - w for k, w in zip(keys, b)], b, source)
    if not layers.changed(rtol):
        keys = changed_keys() if changed_keys is not None else (
            k for k in before if k in after and before[k].shape == after[k].shape
            and not torch.equal(before[k], after[k]))
        touched = Counter(_family(k) for k in keys)
        raise _no_change(source, touched)
    return layers


def lora_deltas(lora: dict[str, torch.Tensor], strength: float = 1.0) -> dict[str, torch.Tensor]:
    """Δ = up @ down × alpha / rank × strength (:func:`..modelfiles.lora_delta`) for every K/V
    layer of a LoRA state dict, keyed by :func:`layer_name`. Without an ``alpha`` entry the scale
    is 1 (diffusers/PEFT convention: the alpha lives in a side config then, pass it through
    ``strength``)."""
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in lora.items():
        for suffix, (part, _) in _LORA_PARTS.items():
            if key.endswith(suffix):
                parts.setdefault(layer_name(key), {})[part] = value
                break
    deltas = {}
    for name, p in parts.items():
        if not TEXT_READING.search(name) or "down" not in p or "up" not in p:
            continue
        deltas[name] = lora_delta(p["up"], p["down"], p.get("alpha"), strength=strength)
    return deltas


def from_lora(lora: dict[str, torch.Tensor], base: dict[str, torch.Tensor] | None = None,
              strength: float = 1.0, source: str = "LoRA") -> TextReadingLayers:
    """The K/V layers of a LoRA: its deltas, and β⁻ from ``base`` (matched by :func:`layer_name`)
    when given. Raises :class:`NoTextLayerChangeError` if the LoRA has no (nonzero) K/V layer."""
    deltas = lora_deltas(lora, strength)
    if not any(d.norm() > 0 for d in deltas.values()):
        touched = Counter(_family(name) for name in {layer_name(k) for k in lora})
        raise _no_change(source, touched)
    names = sorted(deltas)
    before = None
    if base is not None:
        by_name = {layer_name(k): v for k, v in base.items() if TEXT_READING.search(k) and v.ndim == 2}
        unmatched = [n for n in names if n not in by_name]
        if unmatched:
            raise ValueError(f"{source}: {len(unmatched)} LoRA layers have no base weight of the same "
                             f"name (e.g. {unmatched[0]}): different UNet naming (ldm vs diffusers) "
                             "or mismatched model families")
        for n in names:
            if by_name[n].shape != deltas[n].shape:
                raise ValueError(f"{source}: {n} is {tuple(deltas[n].shape)} in the LoRA but "
                                 f"{tuple(by_name[n].shape)} in the base: mismatched model families")
        before = [by_name[n].detach().float() for n in names]
    return TextReadingLayers(names, [deltas[n] for n in names], before, source)
