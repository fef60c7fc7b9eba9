"""What a model file holds, from its tensor names alone (its header; no tensor is read): a LoRA, a
checkpoint, a text encoder, a VAE, or none of these (a diffusion model alone, or a layout not
known here).

``finextract audit`` takes each file for one role (``--base``, ``--clip``, ``--vae`` …) and must
say before any work when a file cannot fill it. ComfyUI would not: its text-encoder loader takes
a file whose layout it does not recognise for a CLIP-L (``comfy.sd.detect_te_model`` falls back to
it), only logs the weights it misses, and encodes the prompts with uninitialised ones; and a base
holding a diffusion model alone needs text-encoder and VAE files of its own, which only its user
can name. The layouts are the key names ComfyUI's loaders read (``comfy/sd.py``: text encoders
by ``detect_te_model``, the VAE of every family the pack handles as an ``AutoencoderKL``; a
checkpoint by its ``model.diffusion_model.`` prefix, ``comfy.model_detection``), matched by
name here.
"""
from __future__ import annotations

import os
import re
from typing import Iterable

from .reading import SAFETENSORS_SUFFIXES, read_header

LORA = "LoRA"
CHECKPOINT = "checkpoint"
TEXT_ENCODER_FILE = "text encoder"
VAE = "VAE"
OTHER = "other"

LORA_KEY_ENDINGS = (".lora_down.weight", ".lora_A.weight", "_lora.down.weight", ".hada_w1_a", ".lokr_w1")
"""The down (or first) factor of a layer in each LoRA spelling ComfyUI loads: kohya, PEFT, older
diffusers, LyCORIS LoHa and LoKr."""

CHECKPOINT_PREFIX = "model.diffusion_model."
"""Where a checkpoint of every family the pack handles (SD1.x, SD2.x, SDXL, SD3, FLUX: ComfyUI's
``ldm``/``sgm`` layout) keeps its diffusion model, beside its text encoders and VAE. A file with
none of it is a diffusion model alone (ComfyUI's ``diffusion_models/``, BFL's
``flux1-dev.safetensors``), loaded by ComfyUI's Load Diffusion Model."""

TEXT_ENCODER_KEY = re.compile(r"^(text_model\.encoder\.layers\.\d+\.|transformer\.resblocks\.\d+\.|"
                              r"encoder\.block\.\d+\.layer\.|model\.layers\.\d+\.|model\.encoder\.layers\.\d+\.)")
"""A stand-alone text encoder's layers as ComfyUI's CLIP loaders read them: CLIP-L/G/H in
Hugging Face (``text_model.encoder.layers.N``) or OpenCLIP (``transformer.resblocks.N``) names,
T5 (``encoder.block.N.layer``: FLUX.1's and SD3.5's T5-XXL), the LLM encoders of newer families
(``model.layers.N``) and Jina CLIP (``model.encoder.layers.N``)."""

VAE_KEY = re.compile(r"^(encoder|decoder)\.(conv_in|conv_out|mid|mid_block|up|up_blocks|down|down_blocks)\.")
"""An AutoencoderKL at the top of the file (SD's, SDXL's, SD3's, FLUX.1's ``ae.safetensors``; the
original or diffusers' names), as ComfyUI's VAELoader reads it."""


def file_kind(tensor_keys: Iterable[str]) -> tuple[str, str | None]:
    """(kind, a tensor name that shows it) of a file with these tensor names: :data:`LORA`,
    :data:`CHECKPOINT`, :data:`TEXT_ENCODER_FILE`, :data:`VAE`, else :data:`OTHER` with the first
    name (None for a file without tensors). Checked in that order: a checkpoint holds text-encoder
    and VAE tensors too, under its own prefixes."""
    keys = sorted(k for k in tensor_keys if k != "__metadata__")
    tests = ((LORA, lambda k: k.endswith(LORA_KEY_ENDINGS)), (CHECKPOINT, lambda k: k.startswith(CHECKPOINT_PREFIX)),
             (TEXT_ENCODER_FILE, TEXT_ENCODER_KEY.match), (VAE, VAE_KEY.match))
    for kind, test in tests:
        example = next((k for k in keys if test(k)), None)
        if example is not None:
            return kind, example
    return OTHER, keys[0] if keys else None


def kind_of(path: str | os.PathLike) -> tuple[str, str | None] | None:
    """:func:`file_kind` of a safetensors file, from its header; None for another format (a
    pickled ``.ckpt``, whose names only unpickling shows: taken for what its role needs). The
    file must be readable (:func:`.reading.model_file_problem` first)."""
    if not os.fspath(path).lower().endswith(SAFETENSORS_SUFFIXES):
        return None
    return file_kind(read_header(path))
