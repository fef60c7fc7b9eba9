"""The layers caption inversion reads: β⁻ and β⁺ of Appendix A, the first trainable linear layers that
see the text embedding, before and after fine-tuning: the cross-attention key and value projections
(``attn2.to_k``, ``attn2.to_v``) of UNet families, the K and V slices of the text stream's ``qkv``
in SD3's and FLUX's joint-attention blocks (which family reads where: :mod:`.families`).

Their weight change carries the caption because of Eq. 14–15: the gradient of a bias-free linear
layer is (upstream gradient)ᵀ × (its input), so every update of β_k lies in the row space spanned by
the caption's text embeddings. Two ways to get the pair:

* a full fine-tune (DreamBooth): two state dicts, compared key by key;
* a LoRA: Δ = up @ down × alpha / rank × strength per layer, in kohya
  (``lora_unet_…_attn2_to_k.lora_down/lora_up/alpha``), diffusers (``….attn2.to_k.lora.down/up``),
  older diffusers (``….attn2.processor.to_k_lora.down/up``) or PEFT (``….attn2.to_k.lora_A/lora_B``)
  spelling; β⁺ = β⁻ + Δ when the base weights are given (Eq. 19 needs them; Eq. 17 needs only Δ).

A LoRA file is read here for the UNet families only (:func:`from_lora`); for SD3/FLUX the node
reads ComfyUI's weights with the LoRA merged (:func:`from_state_dicts`), so every spelling ComfyUI
loads works there.

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
from .families import CROSS_ATTENTION, TextStream, reading_for, reads

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
    if reads(key):
        return "text-reading K/V"
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
    every text-reading K/V layer, each [H_k, N]; ``stream`` maps encoder rows to the N-wide rows
    they read (SD3/FLUX), ``None`` when they read the encoder's rows directly (N = context width)."""

    names: list[str]
    deltas: list[torch.Tensor]
    before: list[torch.Tensor] | None
    source: str
    stream: TextStream | None = None
    what: str = CROSS_ATTENTION.family

    @property
    def after(self) -> list[torch.Tensor]:
        if self.before is None:
            raise ValueError(f"{self.source}: base weights unknown, β⁺ = β⁻ + Δ cannot be formed "
                             "(Eq. 19 needs them; Eq. 17 works on the deltas alone)")
        return [b + d for b, d in zip(self.before, self.deltas)]

    @property
    def context_width(self) -> int:
        """The width of the encoder rows this pair reads."""
        return self.stream.in_width if self.stream is not None else self.deltas[0].shape[1]

    def accepts(self, width: int) -> bool:
        """Whether encoder rows ``width`` wide fit (SD3 zero-pads narrower ones)."""
        return self.stream.accepts(width) if self.stream is not None else width == self.context_width

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
        return (f"{self.source}: {len(changed)} of {len(self.names)} {self.what} layers changed "
                f"(context width {self.context_width})")


def _no_change(source: str, touched: Counter) -> NoTextLayerChangeError:
    what = ", ".join(f"{n} {family}" for family, n in touched.most_common()) or "nothing"
    return NoTextLayerChangeError(
        f"{source}: the text-reading key/value layers (the first layers that read the text, "
        f"Appendix A) did not change, so the weights reveal no caption. Changed instead: {what}. "
        "Typical causes: a LoRA on convolutions only, or a text-encoder-only fine-tune. Use the "
        "training metadata, or no caption.")


def _stream(reading, state: dict[str, torch.Tensor], source: str) -> TextStream | None:
    """The family's embedder (weight, bias) from ``state``, as a :class:`TextStream`."""
    if reading.embedder is None:
        return None
    parts = {}
    for key, value in state.items():
        stem, _, last = key.rpartition(".")
        if last in ("weight", "bias") and layer_name(stem) == reading.embedder:
            parts[last] = value.detach().float()
    if "weight" not in parts:
        raise ValueError(f"{source}: the {reading.family} layers read the text through "
                         f"{reading.embedder!r}, which the base's weights lack")
    return TextStream(parts["weight"], parts.get("bias"), reading.pads)


def from_state_dicts(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor],
                     source: str = "full fine-tune pair", rtol: float = 1e-6,
                     changed_keys: Callable[[], Iterable[str]] | None = None) -> TextReadingLayers:
    """The text-reading K/V layers of a full fine-tune (which layers: the family the keys show,
    :func:`.families.reading_for`): same keys in both state dicts. Raises
    :class:`NoTextLayerChangeError` if none changed, naming what did change: the keys that differ
    between the two dicts, or ``changed_keys()`` when the dicts hold only the text-reading layers."""
    reading = reading_for(before)
    keys = sorted(k for k in before if reading is not None and reading.weights.search(k)
                  and k.endswith("weight") and before[k].ndim == 2)
    if not keys:
        raise ValueError(f"{source}: no text-reading key/value weights in the base (UNet attn2.to_k/to_v, "
                         "SD3 context_block.attn.qkv, FLUX double_blocks txt_attn.qkv)")
    missing = [k for k in keys if k not in after]
    if missing:
        raise ValueError(f"{source}: the fine-tuned weights lack {len(missing)} text-reading layers "
                         f"of the base (e.g. {missing[0]}): mismatched model families?")
    for k in keys:
        if after[k].shape != before[k].shape:
            raise ValueError(f"{source}: {k} is {tuple(before[k].shape)} in the base but "
                             f"{tuple(after[k].shape)} fine-tuned: mismatched model families")
    names, deltas, b = [], [], []
    for k in keys:
        w = before[k].detach().float()
        for (name, kv_before), (_, kv_delta) in zip(reading.kv(layer_name(k), w),
                                                    reading.kv(layer_name(k), after[k].detach().float() - w)):
            names.append(name)
            b.append(kv_before)
            deltas.append(kv_delta)
    layers = TextReadingLayers(names, deltas, b, source, _stream(reading, before, source), reading.family)
    if not layers.changed(rtol):
        keys = changed_keys() if changed_keys is not None else (
            k for k in before if k in after and before[k].shape == after[k].shape
            and not torch.equal(before[k], after[k]))
        touched = Counter(_family(k) for k in keys)
        raise _no_change(source, touched)
    return layers


def lora_deltas(lora: dict[str, torch.Tensor], strength: float = 1.0) -> dict[str, torch.Tensor]:
    """Δ = up @ down × alpha / rank × strength (:func:`..modelfiles.lora_delta`) for every
    cross-attention K/V layer of a LoRA state dict, keyed by :func:`layer_name`. Without an
    ``alpha`` entry the scale is 1 (diffusers/PEFT convention: the alpha lives in a side config
    then, pass it through ``strength``)."""
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in lora.items():
        for suffix, (part, _) in _LORA_PARTS.items():
            if key.endswith(suffix):
                parts.setdefault(layer_name(key), {})[part] = value
                break
    deltas = {}
    for name, p in parts.items():
        if not CROSS_ATTENTION.weights.search(name) or "down" not in p or "up" not in p:
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
        by_name = {layer_name(k): v for k, v in base.items() if CROSS_ATTENTION.weights.search(k) and v.ndim == 2}
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
