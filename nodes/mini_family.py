"""Teach ComfyUI the miniature model family (``finextract.miniature``, MINI-SPEC).

ComfyUI recognises a checkpoint by the UNet config it infers from the keys
(``comfy.model_detection``) and a matching class in ``comfy.supported_models.models``; SD1.x's class
wants 320 channels and a 768-wide context, so our 64-channel UNet would match nothing. ``register()``
appends one class, ``MiniLDM``, that matches exactly this family's inferred config and describes it
the SD1 way: EPS prediction on SD1's scaled-linear schedule, 4-channel latents with scale factor 1.0,
ComfyUI's own SD1 tokenizer + CLIP text model at this family's tiny width.

The VAE is the one thing ComfyUI cannot infer: ``comfy.sd.VAE`` builds any ``decoder.conv_in``
checkpoint with SD's fixed 128-channel ddconfig, so our 32-channel VAE fails with a shape error.
``register()`` therefore wraps ``VAE.__init__`` to pass this family's ddconfig (and the 4× up/down
ratio) when, and only when, the state dict has this family's decoder shapes — state dicts that
could not load before. Every other VAE and model family goes through ComfyUI untouched.
``register()`` is idempotent; the extension calls it when ComfyUI loads the pack.
"""
from __future__ import annotations

import functools

import comfy.latent_formats
import comfy.sd
import comfy.sd1_clip
import comfy.supported_models
import comfy.supported_models_base

from ..miniature.model import CONFIG

_UNET, _TEXT, _VAE = CONFIG["unet"], CONFIG["text"], CONFIG["vae"]
VAE_DOWNSCALE = 2 ** (len(_VAE["ch_mult"]) - 1)

VAE_CONFIG = {"params": {"embed_dim": _VAE["embed_dim"], "ddconfig": {
    "double_z": True, "z_channels": _VAE["z_channels"], "resolution": _VAE["resolution"],
    "in_channels": _VAE["in_channels"], "out_ch": _VAE["out_ch"], "ch": _VAE["ch"],
    "ch_mult": list(_VAE["ch_mult"]), "num_res_blocks": _VAE["num_res_blocks"],
    "attn_resolutions": [], "dropout": 0.0}}}
"""``comfy.sd.VAE(config=...)`` for this family: LDM AutoencoderKL with the mini ddconfig."""

TEXT_CONFIG = {
    "num_hidden_layers": _TEXT["num_layers"], "hidden_size": _TEXT["hidden_size"],
    "num_attention_heads": _TEXT["num_heads"], "intermediate_size": _TEXT["intermediate_size"],
    "hidden_act": "quick_gelu", "max_position_embeddings": _TEXT["max_positions"],
    "vocab_size": _TEXT["vocab_size"], "bos_token_id": 49406, "eos_token_id": 49407}
"""``comfy.clip_model.CLIPTextModel`` config (HF CLIPTextConfig names) of the mini text encoder."""

_DECODER_SHAPES = {
    "decoder.conv_in.weight": (_VAE["ch"] * _VAE["ch_mult"][-1], _VAE["z_channels"], 3, 3),
    "decoder.conv_out.weight": (_VAE["out_ch"], _VAE["ch"], 3, 3),
}


class MiniLatentFormat(comfy.latent_formats.LatentFormat):
    """4 channels, scale factor 1.0 (the latent std is folded into (post_)quant_conv), and the
    VAE's 4× ratio as ``spacial_downscale_ratio`` (the attribute newer ComfyUI formats carry and
    our sampler reads; ComfyUI 0.8.0 has none, so without it a 64 px request became an 8×8 latent)."""
    scale_factor = 1.0
    latent_channels = 4
    spacial_downscale_ratio = VAE_DOWNSCALE


class MiniClipL(comfy.sd1_clip.SDClipModel):
    """ComfyUI's SD1 CLIP-L wrapper ("last" layer, final LayerNorm) at the mini width."""

    def __init__(self, device="cpu", dtype=None, model_options={}):
        super().__init__(device=device, dtype=dtype, model_options=model_options,
                         textmodel_json_config=dict(TEXT_CONFIG), return_projected_pooled=False)


class MiniLDM(comfy.supported_models.SD15):
    """The miniature family: SD1.x in everything but width (SD15's text-encoder key handling and
    default EPS / scaled-linear sampling are inherited)."""
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
    latent_format = MiniLatentFormat

    def clip_target(self, state_dict={}):
        tokenizer = functools.partial(comfy.sd1_clip.SD1Tokenizer, tokenizer=functools.partial(
            comfy.sd1_clip.SDTokenizer, embedding_size=_TEXT["hidden_size"]))
        return comfy.supported_models_base.ClipTarget(
            tokenizer, functools.partial(comfy.sd1_clip.SD1ClipModel, clip_model=MiniClipL))


def is_mini_vae(state_dict) -> bool:
    """True for a VAE state dict (no checkpoint prefix) of this family's decoder."""
    return all(k in state_dict and tuple(state_dict[k].shape) == shape for k, shape in _DECODER_SHAPES.items())


def _wrap_vae_init(init):
    @functools.wraps(init)
    def __init__(self, sd=None, device=None, config=None, dtype=None, metadata=None):
        mini = config is None and sd is not None and is_mini_vae(sd)
        init(self, sd=sd, device=device, config=VAE_CONFIG if mini else config, dtype=dtype, metadata=metadata)
        if mini:
            self.downscale_ratio = self.upscale_ratio = VAE_DOWNSCALE

    __init__.finextract_mini = True
    return __init__


def register() -> None:
    """Make ComfyUI detect and load checkpoints of the family (idempotent)."""
    if MiniLDM not in comfy.supported_models.models:
        comfy.supported_models.models.append(MiniLDM)  # last: never shadows a built-in family
    if not getattr(comfy.sd.VAE.__init__, "finextract_mini", False):
        comfy.sd.VAE.__init__ = _wrap_vae_init(comfy.sd.VAE.__init__)

