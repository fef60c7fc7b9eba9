"""Where each model family's denoiser reads the text: the one table caption recovery consults.

Appendix A's β are "the first trainable linear layers that see the text embedding": their weight
change lies in the row space of the rows they read (Eq. 14–15). Per family (ComfyUI's weight names):

* **UNet families** (SD1.x, SD2.x, SDXL, the miniature): every cross-attention's K and V
  (``attn2.to_k`` / ``attn2.to_v``) read the text encoder's rows directly. SDXL's rows are CLIP-L's
  and CLIP-G's penultimate rows concatenated (768 ‖ 1280 = 2048); both read the same CLIP BPE ids,
  so one vocabulary serves (:class:`.encoders.ConcatenatedEncoders`).
* **SD3 / SD3.5** (MMDiT): the text enters through ``context_embedder`` (Linear 4096 → hidden) into a
  text stream; each joint block's ``context_block.attn.qkv`` projects that stream, after a
  parameter-free LayerNorm and the timestep's adaLN modulation, to the joint attention's Q, K, V.
  The encoder rows are CLIP-L ‖ CLIP-G penultimate rows zero-padded to 4096 (ComfyUI pads them,
  and zero-fills an encoder the checkpoint lacks), then T5-XXL's rows.
* **FLUX.1**: ``txt_in`` (Linear 4096 → 3072) into the text stream; each double block's
  ``txt_attn.qkv`` (LayerNorm, modulation) gives Q, K, V. The rows are T5-XXL's only (CLIP-L feeds
  the pooled vector). Single blocks read text and image through one shared ``linear1``: not a
  text-only layer, left out.

For the stream families β are the K and V slices (rows d…2d, 2d…3d of the fused ``qkv``) of every
block, and a token's row as they read it is LayerNorm(embedder(e)) (:class:`TextStream`): exact
for the first block up to the modulation (a per-timestep diagonal scale and shift, unknown without
a timestep), an approximation for later blocks, whose text stream has passed the earlier blocks
(their updates add to the embedding on the residual stream). The embedder is the base's (β⁻ side:
a LoRA does not change it; a full fine-tune that did is read with the base's).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

import torch


@dataclass(frozen=True)
class TextStream:
    """Encoder rows → the rows a stream family's K/V weights read: zero-padded to the embedder's
    input width where the family pads (SD3), the embedder, then LayerNorm without affine (eps 1e-6,
    as SD3's ``norm1`` and FLUX's ``txt_norm1``). Differentiable, so PEZ runs through it."""

    weight: torch.Tensor  # [hidden, in]
    bias: torch.Tensor | None
    pads: bool

    @property
    def in_width(self) -> int:
        return self.weight.shape[1]

    def accepts(self, width: int) -> bool:
        return width == self.in_width or (self.pads and width < self.in_width)

    def __call__(self, rows: torch.Tensor) -> torch.Tensor:
        if rows.shape[-1] < self.in_width and self.pads:
            rows = torch.nn.functional.pad(rows, (0, self.in_width - rows.shape[-1]))
        hidden = torch.nn.functional.linear(rows, self.weight.to(rows.dtype),
                                            None if self.bias is None else self.bias.to(rows.dtype))
        return torch.nn.functional.layer_norm(hidden, hidden.shape[-1:], eps=1e-6)


@dataclass(frozen=True)
class TextReading:
    """One family's text-reading weights (``family``: what they are, in messages): ``weights`` matches their keys in any spelling
    :func:`.weight_delta.layer_name` normalises to; ``fused_qkv``: Q, K, V are thirds of one weight
    (K and V kept); ``embedder``: the layer (its :func:`layer_name`) between the encoder and them,
    ``None`` when they read the encoder's rows directly; ``pads``: the host zero-pads shorter encoder
    rows to the embedder's width."""

    family: str
    weights: re.Pattern
    fused_qkv: bool = False
    embedder: str | None = None
    pads: bool = False

    def kv(self, name: str, weight: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
        """The (name, K or V weight) pairs of one matched weight."""
        if not self.fused_qkv:
            return [(name, weight)]
        d = weight.shape[0] // 3
        return [(f"{name}.k", weight[d:2 * d]), (f"{name}.v", weight[2 * d:])]


CROSS_ATTENTION = TextReading("cross-attention K/V",
                              re.compile(r"attn2[._](?:processor[._])?to_[kv](?:_lora)?(?=$|[._])"))
SD3_JOINT = TextReading("SD3 context_block K/V",
                        re.compile(r"joint_blocks[._]\d+[._]context_block[._]attn[._]qkv(?=$|[._])"),
                        fused_qkv=True, embedder="context_embedder", pads=True)
FLUX_DOUBLE = TextReading("FLUX double-block txt_attn K/V",
                          re.compile(r"double_blocks[._]\d+[._]txt_attn[._]qkv(?=$|[._])"),
                          fused_qkv=True, embedder="txt_in")
READINGS = (CROSS_ATTENTION, SD3_JOINT, FLUX_DOUBLE)
"""Checked in this order; a model's keys match one of them."""


def reading_for(keys: Iterable[str]) -> TextReading | None:
    """The reading whose text-reading weights are among ``keys`` (None: no known family's)."""
    keys = list(keys)
    return next((r for r in READINGS if any(r.weights.search(k) for k in keys)), None)


def reads(key: str) -> bool:
    """Whether ``key`` is a text-reading weight or a text embedder of some family (the weights
    caption recovery needs from a model)."""
    return any(r.weights.search(key) or (r.embedder and re.search(rf"(^|[._]){r.embedder}[._](weight|bias)$", key))
               for r in READINGS)
