"""Teach ComfyUI the miniature pixel-space family (``finextract.miniature``) through its own
extension points; no ComfyUI class or function is replaced.

ComfyUI recognises a checkpoint by the UNet config it infers from the keys
(``comfy.model_detection``) and a matching class in ``comfy.supported_models.models``; SD1.x's class
wants 320 channels and a 768-wide context, so our 64-channel UNet matches nothing. ``register()``
appends one class, ``MiniPixel``, that matches exactly this family's inferred config and describes
it the SD way (v prediction — ComfyUI's ``V_PREDICTION``, as SD 2's v models — on SD1's
scaled-linear schedule, ComfyUI's own SD1 tokenizer + CLIP text model at this family's width),
with three differences of a pixel-space model:

- its ``get_model`` builds ``model_base.BaseModel(..., unet_model=PixelUNet)``: ComfyUI's own
  ``UNetModel`` run on ``pixel_unshuffle(x, 4)`` and shuffled back, so the state-dict keys are
  SD1's and LoRA key names match;
- its latent format is the image itself (3 channels in [-1, 1], ratio 1). The VAE needs nothing
  from us: every checkpoint of the family carries ``first_stage_model.pixel_space_vae``, which
  makes ``comfy.sd.VAE`` build ``comfy.pixel_space_convert.PixelspaceConversionVAE``;
- it is not an inpainting model (ComfyUI's default treats ``in_channels > 4`` as one).

``register()`` is idempotent; the extension calls it when ComfyUI loads the pack.
"""
from __future__ import annotations

import functools

import comfy.latent_formats
import comfy.model_base
import comfy.sd1_clip
import comfy.supported_models
import comfy.supported_models_base
import torch.nn.functional as F
from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

from ..miniature.model import CONFIG, PATCH

_UNET, _TEXT = CONFIG["unet"], CONFIG["text"]

TEXT_CONFIG = {
    "num_hidden_layers": _TEXT["num_layers"], "hidden_size": _TEXT["hidden_size"],
    "num_attention_heads": _TEXT["num_heads"], "intermediate_size": _TEXT["intermediate_size"],
    "hidden_act": "quick_gelu", "max_position_embeddings": _TEXT["max_positions"],
    "vocab_size": _TEXT["vocab_size"], "bos_token_id": 49406, "eos_token_id": 49407}
"""``comfy.clip_model.CLIPTextModel`` config (HF CLIPTextConfig names) of the mini text encoder."""


class PixelUNet(UNetModel):
    """ComfyUI's SD UNet on the ``pixel_unshuffle`` of a 64 px image: (B,3,64,64) in and out,
    (B,48,16,16) inside. The rearrangement is exact, so this is the same function as
    :class:`finextract.miniature.model.MiniUNet`."""

    def forward(self, x, *args, **kwargs):
        return F.pixel_shuffle(super().forward(F.pixel_unshuffle(x, PATCH), *args, **kwargs), PATCH)


class MiniPixelLatent(comfy.latent_formats.LatentFormat):
    """The image is the latent: 3 channels, scale 1, and ``spacial_downscale_ratio`` 1 (the
    attribute newer ComfyUI formats carry and our sampler reads to size empty latents)."""
    latent_channels = 3
    scale_factor = 1.0
    spacial_downscale_ratio = 1
    latent_rgb_factors = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    latent_rgb_factors_bias = [0.0, 0.0, 0.0]


class MiniClipL(comfy.sd1_clip.SDClipModel):
    """ComfyUI's SD1 CLIP-L wrapper ("last" layer, final LayerNorm) at the mini width."""

    def __init__(self, device="cpu", dtype=None, model_options={}):
        super().__init__(device=device, dtype=dtype, model_options=model_options,
                         textmodel_json_config=dict(TEXT_CONFIG), return_projected_pooled=False)


class MiniPixel(comfy.supported_models.SD15):
    """The miniature family: SD1.x in everything but width, space and v prediction (SD15's
    text-encoder key handling and scaled-linear schedule are inherited)."""
    unet_config = {
        "in_channels": _UNET["in_channels"],
        "model_channels": _UNET["model_channels"],
        "channel_mult": list(_UNET["channel_mult"]),
        "transformer_depth": [int(level in _UNET["attention_levels"])
                              for level in range(len(_UNET["channel_mult"]))],
        "context_dim": _UNET["context_dim"],
        "use_linear_in_transformer": True,
        "adm_in_channels": None,
        "use_temporal_attention": False,
    }
    unet_extra_config = {"num_heads": -1, "num_head_channels": _UNET["num_head_channels"]}
    latent_format = MiniPixelLatent

    def inpaint_model(self):
        return False

    def model_type(self, state_dict, prefix=""):
        return comfy.model_base.ModelType.V_PREDICTION

    def get_model(self, state_dict, prefix="", device=None):
        return comfy.model_base.BaseModel(self, model_type=self.model_type(state_dict, prefix), device=device,
                                          unet_model=PixelUNet)

    def clip_target(self, state_dict={}):
        tokenizer = functools.partial(comfy.sd1_clip.SD1Tokenizer, tokenizer=functools.partial(
            comfy.sd1_clip.SDTokenizer, embedding_size=_TEXT["hidden_size"]))
        return comfy.supported_models_base.ClipTarget(
            tokenizer, functools.partial(comfy.sd1_clip.SD1ClipModel, clip_model=MiniClipL))


def register() -> None:
    """Make ComfyUI detect and load checkpoints of the family (idempotent)."""
    if MiniPixel not in comfy.supported_models.models:
        comfy.supported_models.models.append(MiniPixel)  # last: never shadows a built-in family
