"""Random-weight model files of the families creators train LoRAs for today — SDXL (ε and
v-prediction), SD3.5 and FLUX.1-dev — built with ComfyUI's own model classes, for the host tests.

Like :mod:`sd15_models` (whose cache and random-weight helpers this reuses): no real checkpoint can
be shipped or downloaded here, so these stand in for them; ComfyUI's ``model_detection`` names
each file's family (checked when building, written to ``manifest.json``). Run as a script to build
(``python tests/host/family_models.py OUT_DIR``, ComfyUI importable through ``finextract.host``);
:func:`model_folder` builds once and caches.

What is real size and what is shrunk (the machine's limit is ~8 GiB per process; ComfyUI runs
diffusion models in fp32 on a CPU):

- **SDXL**: text encoders at full size (CLIP-L 123 M + CLIP-G 695 M parameters: ComfyUI builds
  them from fixed configs, so they cannot shrink), the real SD VAE. The UNet has every key and
  depth of SDXL's (model_channels 320, transformer depth [0, 0, 2, 2, 10, 10], middle 10, 2816-d
  ADM, 2048-d context) but channel_mult [1, 1, 1] instead of [1, 2, 4]: 283 M parameters instead
  of 2.57 G (10.3 GB in fp32, over the limit by itself), 0.6–0.7 s per batch-2 evaluation at a
  16×16 latent on one core. ComfyUI still detects it as ``SDXL`` (its match is on model_channels,
  transformer depths, context and ADM widths; channel_mult is free). v-prediction: the same UNet
  with a ``v_pred`` key, which ComfyUI reads as ``ModelType.V_PREDICTION``
  (``supported_models.SDXL.model_type``), as in NoobAI-XL v-pred files.
- **FLUX.1-dev**: hidden 3072, 24 heads, guidance embedding (what ComfyUI's detection fixes or
  checks: ``Flux``, not ``FluxSchnell``), 1 double and 1 single block instead of 19 and 38. The
  file holds the diffusion model and the 16-channel VAE, no text encoder (as Comfy-Org's
  all-in-one FLUX files minus T5: T5-XXL has 4.7 G parameters and cannot exist here). Its text
  input is therefore 768 wide (``txt_in``; FLUX.1's is 4096, T5-XXL's width), fed by a real-size
  CLIP-L file loaded with ComfyUI's stock CLIPLoader; every key name is FLUX.1's.
- **refusals**: a Qwen-Image LoRA (diffusers spelling) and an SD1.5 instruct-pix2pix base
  (``SD15_instructpix2pix``, a family the pack does not handle; shrunk SD1.5 UNet, nothing else).
- **split layout** (what ComfyUI's own FLUX.1 dev template loads: the diffusion model alone in
  ``diffusion_models/``, text encoders and VAE in files of their own): the FLUX base and full
  fine-tune again as diffusion-model-only files with BFL's bare keys (no ``model.diffusion_model.``),
  the FLUX VAE as ``vae/fx-flux-ae.safetensors`` (bare keys, as BFL's ``ae.safetensors``), all
  from the same tensors as the checkpoints; the fine-tune once more in diffusers' names
  (``transformer_blocks.N.attn.to_q`` …, through ComfyUI's own ``flux_to_diffusers`` map), and the
  FLUX kohya LoRA misplaced in ``diffusion_models/``. An SD1.5 (shrunk UNet of ``sd15_models``,
  real-size CLIP-L, SD VAE) checkpoint pair, its UNet-only counterparts, its VAE file, a kohya
  LoRA on UNet and CLIP-L, and its bare UNet misplaced in ``checkpoints/``. The SD1.5
  checkpoint's CLIP-L is the stand-alone CLIP-L file's tensors, so a stock CLIPLoader of that file
  is the checkpoint's text encoder.
- **SD3.5**: MMDiT with RMS q/k norm (SD3.5 Large's layout) at depth 2 (hidden 128, 2 heads of
  64; ComfyUI ties hidden size to depth), 16-channel VAE, CLIP-L as its only text encoder
  (ComfyUI's SD3 text encoder pads the missing CLIP-G and T5 with zeros): ``SD3``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import sys
import types

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # the sibling sd15_models, as a script
import sd15_models  # noqa: E402
from finextract import host  # noqa: E402

C = types.SimpleNamespace()
"""ComfyUI's modules the builder uses, imported by :func:`main` through the door."""

SDXL_SMALL = dict(
    use_checkpoint=False, image_size=32, out_channels=4, use_spatial_transformer=True, legacy=False,
    num_classes="sequential", adm_in_channels=2816, in_channels=4, model_channels=320,
    num_res_blocks=[2, 2, 2], transformer_depth=[0, 0, 2, 2, 10, 10], channel_mult=[1, 1, 1],
    transformer_depth_middle=10, use_linear_in_transformer=True, context_dim=2048, num_head_channels=64,
    transformer_depth_output=[0, 0, 0, 2, 2, 2, 10, 10, 10],
    use_temporal_attention=False, use_temporal_resblock=False)
FLUX_SMALL = dict(image_model="flux", in_channels=16, out_channels=16, vec_in_dim=768, context_in_dim=768,
                  hidden_size=3072, mlp_ratio=4.0, num_heads=24, depth=1, depth_single_blocks=1,
                  axes_dim=[16, 56, 56], theta=10000, qkv_bias=True, guidance_embed=True, patch_size=2,
                  txt_ids_dims=[], yak_mlp=False, txt_norm=False)
SD3_SMALL = dict(in_channels=16, patch_size=2, out_channels=16, depth=2, input_size=None, adm_in_channels=2048,
                 context_embedder_config={"target": "torch.nn.Linear",
                                          "params": {"in_features": 4096, "out_features": 128}},
                 num_patches=36864, pos_embed_max_size=192, qk_norm="rms", pos_embed_scaling_factor=None,
                 x_block_self_attn_layers=[])
VAE16_CONFIG = dict(sd15_models.VAE_CONFIG, z_channels=16)

# Layers each family's test LoRAs touch: (kohya name, diffusers/PEFT name, ComfyUI weight key).
SDXL_LORA_LAYERS = [
    ("lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k",
     "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k", "input_blocks.4.1.transformer_blocks.0.attn2.to_k"),
    ("lora_unet_middle_block_1_transformer_blocks_9_attn1_to_q",
     "mid_block.attentions.0.transformer_blocks.9.attn1.to_q", "middle_block.1.transformer_blocks.9.attn1.to_q"),
    ("lora_unet_output_blocks_0_1_transformer_blocks_3_ff_net_2",
     "up_blocks.0.attentions.0.transformer_blocks.3.ff.net.2", "output_blocks.0.1.transformer_blocks.3.ff.net.2"),
]
SDXL_TE_LAYERS = [  # (kohya name, diffusers/PEFT name, checkpoint key of the weight)
    ("lora_te1_text_model_encoder_layers_0_self_attn_k_proj", "text_encoder.text_model.encoder.layers.0.self_attn.k_proj",
     "conditioner.embedders.0.transformer.text_model.encoder.layers.0.self_attn.k_proj.weight"),
    ("lora_te2_text_model_encoder_layers_0_mlp_fc1", "text_encoder_2.text_model.encoder.layers.0.mlp.fc1",
     "conditioner.embedders.1.model.transformer.resblocks.0.mlp.c_fc.weight"),
]
FLUX_LORA_LAYERS = [  # (kohya name, diffusers/PEFT name, ComfyUI weight key, rows of it (slice) or None)
    ("lora_unet_double_blocks_0_img_attn_qkv", None, "double_blocks.0.img_attn.qkv", None),
    (None, "transformer.transformer_blocks.0.attn.to_q", "double_blocks.0.img_attn.qkv", (0, 3072)),
    (None, "transformer.transformer_blocks.0.attn.add_k_proj", "double_blocks.0.txt_attn.qkv", (3072, 3072)),
    ("lora_unet_double_blocks_0_img_mlp_0", "transformer.transformer_blocks.0.ff.net.0.proj", "double_blocks.0.img_mlp.0", None),
    ("lora_unet_single_blocks_0_linear2", "transformer.single_transformer_blocks.0.proj_out", "single_blocks.0.linear2", None),
    (None, "transformer.single_transformer_blocks.0.proj_mlp", "single_blocks.0.linear1", (9216, 12288)),
]
SD3_LORA_LAYERS = [  # (kohya-style name as SD3 trainers write it, diffusers/PEFT name, ComfyUI weight key)
    ("lora_unet_joint_blocks_0_x_block_attn_qkv", None, "joint_blocks.0.x_block.attn.qkv"),
    (None, "transformer.transformer_blocks.1.attn.to_k", "joint_blocks.1.x_block.attn.qkv"),
    ("lora_unet_joint_blocks_0_context_block_mlp_fc1", "transformer.transformer_blocks.0.ff_context.net.0.proj",
     "joint_blocks.0.context_block.mlp.fc1"),
]


def random_tensors(shapes: dict, seed: int) -> dict:
    """fp16 tensors for ``{key: (shape, dtype)}``, one at a time (peak memory: the result): weights
    fan-in-scaled normal, norm scales 1, biases 0, integer buffers counted up (position ids)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key in sorted(shapes):
        shape, dtype = shapes[key]
        if not dtype.is_floating_point:
            out[key] = torch.arange(shape[-1]).expand(shape).contiguous().to(dtype)
        elif key.endswith("bias"):
            out[key] = torch.zeros(shape, dtype=torch.float16)
        elif len(shape) >= 2:
            out[key] = (torch.randn(shape, generator=gen) / math.sqrt(math.prod(shape[1:]))).half()
        else:
            out[key] = torch.ones(shape, dtype=torch.float16)
    return out


def shapes_of(sd: dict) -> dict:
    return {k: (tuple(v.shape), v.dtype) for k, v in sd.items()}


def diffusion_model(family_class, config: dict, seed: int) -> dict:
    with torch.device("meta"):
        model = family_class(dict(config)).get_model({})
    shapes = shapes_of(model.diffusion_model.state_dict())
    return {f"model.diffusion_model.{k}": v for k, v in random_tensors(shapes, seed).items()}


def vae(config: dict, prefix: str, seed: int) -> dict:
    with torch.device("meta"):
        module = C.autoencoder.AutoencoderKL(ddconfig=config, embed_dim=config["z_channels"])
    return {f"{prefix}{k}": v for k, v in random_tensors(shapes_of(module.state_dict()), seed).items()}


def sdxl_text_encoders(seed: int) -> dict:
    """CLIP-L and CLIP-G in the keys of an SDXL checkpoint (ComfyUI's own saving conversion)."""
    with torch.device("meta"):
        clip = C.sdxl_clip.SDXLClipModel()
        saving = C.supported_models.SDXL(dict(SDXL_SMALL)).process_clip_state_dict_for_saving(clip.state_dict())
    return random_tensors({k: v for k, v in shapes_of(saving).items() if "position_ids" not in k}, seed)


def clip_l(seed: int, prefix: str = "") -> dict:
    """A CLIP-L text encoder in the keys of a stand-alone ``clip_l.safetensors``."""
    with torch.device("meta"):
        clip = C.sd1_clip.SDClipModel()
    shapes = {k[len("transformer."):]: v for k, v in shapes_of(clip.state_dict()).items()
              if k.startswith("transformer.") and "position_ids" not in k}
    return {prefix + k: v for k, v in random_tensors(shapes, seed).items()}


def perturbed(sd: dict, prefix: str, scale: float, seed: int) -> dict:
    """:func:`sd15_models.perturb` one tensor at a time, kept in fp16 (a "fine-tune" of the weights
    under ``prefix``): perturbing FLUX's whole dict at once held it in fp32 beside the fp16 base and
    took the builder to 7.9 GB."""
    return {k: sd15_models.perturb({k: v}, prefix, scale, seed + i)[k].half()
            for i, (k, v) in enumerate(sorted(sd.items()))}


def factors(rank: int, weight: torch.Tensor, seed: int, rows=None):
    out_dim = weight.shape[0] if rows is None else rows[1]
    return sd15_models.lora_factors(rank, weight.shape[1], out_dim, seed)


def write(path: str, sd: dict, metadata=None):
    C.utils.save_torch_file(sd15_models.half(sd), path, metadata=metadata)


def spellings(layers, rank: int) -> dict:
    """{"kohya": …, "peft": …} LoRA dicts of one delta per layer, for ``layers`` of (kohya name or
    None, diffusers/PEFT name or None, down, up): kohya with ``lora_down``/``lora_up`` and alpha =
    rank (scale 1), PEFT with ``lora_A``/``lora_B`` and no alpha (scale 1), each on the layers its
    spelling can name."""
    kohya, peft = {}, {}
    for kname, dname, down, up in layers:
        if kname is not None:
            kohya.update({f"{kname}.lora_down.weight": down, f"{kname}.lora_up.weight": up,
                          f"{kname}.alpha": torch.tensor(float(rank))})
        if dname is not None:
            peft.update({f"{dname}.lora_A.weight": down, f"{dname}.lora_B.weight": up})
    return {"kohya": kohya, "peft": peft}


def sdxl_loras(unet: dict, te: dict, rank: int = 4) -> dict:
    """One delta on 3 UNet layers and 2 text-encoder layers (CLIP-L, CLIP-G) in kohya spelling
    (``lora_unet_…``, ``lora_te1_…``/``lora_te2_…``) and diffusers/PEFT spelling
    (``unet.…``/``text_encoder.…``/``text_encoder_2.…``)."""
    layers = [(k, "unet." + d, unet[f"model.diffusion_model.{w}.weight"]) for k, d, w in SDXL_LORA_LAYERS]
    layers += [(k, d, te[w]) for k, d, w in SDXL_TE_LAYERS]
    return spellings([(k, d, *factors(rank, weight, seed=200 + i)) for i, (k, d, weight) in enumerate(layers)], rank)


def flux_loras(unet: dict, rank: int = 4) -> dict:
    """kohya (``lora_unet_double_blocks_…``, whole fused weights) and diffusers/PEFT
    (``transformer.transformer_blocks.N.attn.to_q.lora_A.weight``: slices of the fused qkv and
    linear1 weights) LoRAs."""
    return spellings([(k, d, *factors(rank, unet[f"model.diffusion_model.{key}.weight"], seed=300 + i, rows=rows))
                      for i, (k, d, key, rows) in enumerate(FLUX_LORA_LAYERS)], rank)


def sd3_loras(unet: dict, rank: int = 4) -> dict:
    """kohya-style (``lora_unet_joint_blocks_…``) and diffusers/PEFT LoRAs; diffusers' ``to_k`` is
    the middle third of the fused ``qkv``."""
    layers = []
    for i, (k, d, key) in enumerate(SD3_LORA_LAYERS):
        weight = unet[f"model.diffusion_model.{key}.weight"]
        rows = (weight.shape[0] // 3, weight.shape[0] // 3) if d and d.endswith(".to_k") else None
        layers.append((k, d, *factors(rank, weight, seed=400 + i, rows=rows)))
    return spellings(layers, rank)


def unhandled_lora(rank: int = 4) -> dict:
    """A LoRA of a family this pack does not handle: Qwen-Image's transformer, in the diffusers
    spelling its trainers write (``transformer.transformer_blocks.N.attn.add_q_proj`` with
    ``img_mlp``/``txt_mlp``, layer widths 3072)."""
    lora = {}
    for i, name in enumerate(["transformer_blocks.0.attn.add_q_proj", "transformer_blocks.0.img_mlp.net.0.proj",
                              "transformer_blocks.0.txt_mlp.net.2"]):
        down, up = sd15_models.lora_factors(rank, 3072, 3072, seed=500 + i)
        lora.update({f"transformer.{name}.lora_A.weight": down, f"transformer.{name}.lora_B.weight": up})
    return lora


def bare(sd: dict, prefix: str) -> dict:
    """The tensors under ``prefix``, without it: a checkpoint's diffusion model or VAE as the
    stand-alone files BFL and Comfy-Org ship (``flux1-dev.safetensors``, ``ae.safetensors``)."""
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def diffusers_flux(unet: dict) -> dict:
    """A FLUX diffusion model in diffusers' names (q, k, v split out of the fused ``qkv`` …), through
    ComfyUI's own map (``comfy.utils.flux_to_diffusers``, with which it converts such files back)."""
    native = bare(unet, "model.diffusion_model.")
    out = {}
    config = {"depth": FLUX_SMALL["depth"], "depth_single_blocks": FLUX_SMALL["depth_single_blocks"],
              "hidden_size": FLUX_SMALL["hidden_size"]}
    for name, target in C.utils.flux_to_diffusers(config).items():
        key, offset, fun = (target, None, None) if isinstance(target, str) else (*target[:2], (target + (None,))[2])
        if key in native:
            tensor = native[key] if offset is None else native[key].narrow(*offset)
            out[name] = tensor if fun is None else fun(tensor)
    return out


def sd15_lora(unet: dict, te: dict, rank: int = 4) -> dict:
    """A kohya LoRA on 4 UNet layers (``lora_unet_…``) and 2 CLIP-L layers (``lora_te_…``)."""
    layers = [("lora_unet_" + d.replace(".", "_"), unet[f"model.diffusion_model.{w}.weight"])
              for d, w in sd15_models.LORA_LAYERS.items()]
    layers += [(f"lora_te_text_model_encoder_layers_{b}_{m.replace('.', '_')}",
                te[f"text_model.encoder.layers.{b}.{m}.weight"]) for b, m in ((0, "self_attn.k_proj"), (1, "mlp.fc1"))]
    return spellings([(k, None, *factors(rank, weight, seed=600 + i)) for i, (k, weight) in enumerate(layers)],
                     rank)["kohya"]


def detected(sd: dict) -> str:
    config = C.model_detection.model_config_from_unet(sd, "model.diffusion_model.")
    return type(config).__name__ if config is not None else "none"


def build(out: pathlib.Path) -> dict:
    for sub in ("checkpoints", "loras", "text_encoders", "diffusion_models", "vae"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    manifest = {}

    def save(kind, name, sd, metadata=None):
        write(str(out / kind / name), sd, metadata)
        return name

    # SDXL: ε base, ε full fine-tune (UNet moved, text encoders kept: the usual SDXL DreamBooth), v base
    unet = diffusion_model(C.supported_models.SDXL, SDXL_SMALL, seed=11)
    te = sdxl_text_encoders(seed=12)
    base = {**unet, **te, **vae(sd15_models.VAE_CONFIG, "first_stage_model.", seed=13)}
    fine = {**base, **perturbed(unet, "model.diffusion_model.", 0.05, seed=14)}
    vbase = {**base, "v_pred": torch.tensor([])}
    families = {"sdxl": (base, fine), "sdxl_v": (vbase, None)}
    loras = sdxl_loras(unet, te)
    for key, (b, f) in families.items():
        entry = {"family": detected(b), "checkpoints": {"base": save("checkpoints", f"fx-{key}-base.safetensors", b)},
                 "loras": {fmt: save("loras", f"fx-{key}-lora-{fmt}.safetensors", sd) for fmt, sd in loras.items()}}
        if f is not None:
            entry["checkpoints"]["finetuned"] = save("checkpoints", f"fx-{key}-finetuned.safetensors", f)
        manifest[key] = entry
    del unet, te, base, fine, vbase, families

    # FLUX.1-dev: diffusion model + VAE; CLIP-L stand-alone; the split files of the same tensors
    unet = diffusion_model(C.supported_models.Flux, FLUX_SMALL, seed=21)
    flux_vae = vae(VAE16_CONFIG, "vae.", seed=22)
    base = {**unet, **flux_vae}
    fine_unet = perturbed(unet, "model.diffusion_model.", 0.05, seed=23)
    manifest["flux"] = {
        "family": detected(base),
        "checkpoints": {"base": save("checkpoints", "fx-flux-base.safetensors", base),
                        "finetuned": save("checkpoints", "fx-flux-finetuned.safetensors", {**base, **fine_unet})},
        "diffusion_models": {
            "base": save("diffusion_models", "fx-flux-dev.safetensors", bare(unet, "model.diffusion_model.")),
            "finetuned": save("diffusion_models", "fx-flux-dev-finetuned.safetensors",
                              bare(fine_unet, "model.diffusion_model.")),
            "finetuned_diffusers": save("diffusion_models", "fx-flux-dev-finetuned-diffusers.safetensors",
                                        diffusers_flux(fine_unet))},
        "vae": save("vae", "fx-flux-ae.safetensors", bare(flux_vae, "vae.")),
        "loras": {fmt: save("loras", f"fx-flux-lora-{fmt}.safetensors", sd) for fmt, sd in flux_loras(unet).items()},
        "clip": save("text_encoders", "fx-clip-l.safetensors", clip_l(seed=24))}
    manifest["misplaced_lora"] = save("diffusion_models", "fx-flux-lora-misplaced.safetensors",
                                      flux_loras(unet)["kohya"])
    del unet, base, fine_unet, flux_vae

    # SD1.5: checkpoint pair and its split files; the checkpoint's CLIP-L is fx-clip-l's tensors
    # (SD1.5 files carry no text_projection)
    unet = diffusion_model(C.supported_models.SD15, sd15_models.SD15_SMALL, seed=51)
    te = {k: v for k, v in clip_l(seed=24).items() if not k.startswith("text_projection")}
    sd15_vae = vae(sd15_models.VAE_CONFIG, "first_stage_model.", seed=52)
    base = {**unet, **{f"cond_stage_model.transformer.{k}": v for k, v in te.items()}, **sd15_vae}
    fine_unet = perturbed(unet, "model.diffusion_model.", 0.05, seed=53)
    manifest["sd15"] = {
        "family": detected(base),
        "checkpoints": {"base": save("checkpoints", "fx-sd15-base.safetensors", base),
                        "finetuned": save("checkpoints", "fx-sd15-finetuned.safetensors", {**base, **fine_unet})},
        "diffusion_models": {
            "base": save("diffusion_models", "fx-sd15-unet.safetensors", bare(unet, "model.diffusion_model.")),
            "finetuned": save("diffusion_models", "fx-sd15-finetuned-unet.safetensors",
                              bare(fine_unet, "model.diffusion_model."))},
        "vae": save("vae", "fx-sd15-vae.safetensors", bare(sd15_vae, "first_stage_model.")),
        "loras": {"kohya": save("loras", "fx-sd15-lora-kohya.safetensors", sd15_lora(unet, te))},
        "clip": manifest["flux"]["clip"],
        "misplaced_unet": save("checkpoints", "fx-sd15-unet-misplaced.safetensors", bare(unet, "model.diffusion_model."))}
    del unet, te, sd15_vae, base, fine_unet

    # SD3.5 (Large's layout): MMDiT + 16-channel VAE + CLIP-L in the checkpoint
    unet = diffusion_model(C.supported_models.SD3, SD3_SMALL, seed=31)
    base = {**unet, **clip_l(seed=32, prefix="text_encoders.clip_l.transformer."),
            **vae(VAE16_CONFIG, "first_stage_model.", seed=33)}
    manifest["sd3"] = {
        "family": detected(base),
        "checkpoints": {"base": save("checkpoints", "fx-sd3-base.safetensors", base),
                        "finetuned": save("checkpoints", "fx-sd3-finetuned.safetensors",
                                          {**base, **perturbed(unet, "model.diffusion_model.", 0.05, seed=34)})},
        "loras": {fmt: save("loras", f"fx-sd3-lora-{fmt}.safetensors", sd) for fmt, sd in sd3_loras(unet).items()}}
    manifest["unhandled_lora"] = save("loras", "fx-qwen-image-lora.safetensors", unhandled_lora())

    # A base of a family the pack does not handle, ComfyUI's SD15_instructpix2pix (SD1.5's edit
    # model: 8 input channels, the latent and the image to edit), as the shrunk SD1.5 UNet alone:
    # the loader refuses it on detection, before anything else in the file matters.
    unet = diffusion_model(C.supported_models.SD15_instructpix2pix, {**sd15_models.SD15_SMALL, "in_channels": 8},
                           seed=41)
    manifest["unhandled_base"] = {"family": detected(unet),
                                  "file": save("checkpoints", "fx-sd15-ip2p-base.safetensors", unet)}
    return manifest


def model_folder(comfyui, python) -> pathlib.Path:
    """The folder (``checkpoints/``, ``loras/``, ``text_encoders/``, ``manifest.json``), built once
    (measured: 74 s wall, 6.3 GB peak RSS, 10 GB: three SDXL files carry full-size text encoders)
    and cached."""
    return sd15_models.cached_build(pathlib.Path(__file__), "families", comfyui, python)


def main():
    host.import_comfyui(cpu=True)
    for name in ("model_detection", "sd1_clip", "sdxl_clip", "supported_models", "utils", "ldm.models.autoencoder"):
        setattr(C, name.rsplit(".", 1)[-1], host.module(f"comfy.{name}"))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    args = parser.parse_args()
    manifest = build(pathlib.Path(args.out))
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    print(json.dumps(manifest))


if __name__ == "__main__":
    main()
