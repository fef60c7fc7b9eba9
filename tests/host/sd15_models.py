"""Random-weight SD1.5-architecture model files, built with ComfyUI's own model classes, for the
host tests (and the guidance-cost benchmark, run from a checkout).

:func:`model_folder` returns the folder, building it once in a subprocess (ComfyUI's interpreter,
ComfyUI imported through :mod:`finextract.host`) and caching it under ``$FINEXTRACT_TEST_CACHE``
(default ``~/.cache/finextract-host-tests``) keyed by this file's source and the size. Importing
this module does not import ComfyUI; running it as a script does:

    python tests/host/sd15_models.py OUT_DIR [--full]      # finextract importable, COMFYUI_PATH set

Random weights: no real checkpoint can be shipped or downloaded here, so these stand in for one.
They are real SD1.5-architecture files (ComfyUI detects them as ``SD15``), with the real CLIP-L
text encoder and SD VAE shapes; only the UNet is shrunk (two levels, one res block each) unless
``--full`` asks for the full SD1.5 UNet. Files are written under ``OUT_DIR/checkpoints`` and
``OUT_DIR/loras``; a ``manifest.json`` lists them. Deterministic: the same command writes the
same bytes, so the harness caches the folder between sessions.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import pathlib
import shutil
import subprocess
import tempfile
import types

import torch

from finextract import host


def cache_root() -> pathlib.Path:
    return pathlib.Path(os.environ.get("FINEXTRACT_TEST_CACHE",
                                       pathlib.Path.home() / ".cache" / "finextract-host-tests"))


def model_folder(comfyui: str | os.PathLike, python: str, full: bool = False) -> pathlib.Path:
    """The folder with ``checkpoints/``, ``loras/`` and ``manifest.json``; builds it if missing
    (small: ~40 s; full SD1.5 UNet: a few minutes and ~4 GB)."""
    return cached_build(pathlib.Path(__file__), "full" if full else "small", comfyui, python,
                        ["--full"] if full else [])


def cached_build(script: pathlib.Path, tag: str, comfyui, python: str, args=()) -> pathlib.Path:
    """``script OUT_DIR *args`` run once in ComfyUI's interpreter (ComfyUI imported through
    :mod:`finextract.host`), its folder cached under :func:`cache_root` keyed by the script's source
    (and this file's, whose helpers builders share) and ``tag``."""
    digest = hashlib.sha256(script.read_bytes() + pathlib.Path(__file__).read_bytes()).hexdigest()[:16]
    folder = cache_root() / f"{digest}-{tag}"
    if (folder / "manifest.json").is_file():
        return folder
    cache_root().mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="build-", dir=cache_root()))
    cmd = [python, str(script.resolve()), str(tmp), *args]
    with tempfile.TemporaryDirectory() as shim:
        env = {**host.pack_env(shim), "COMFYUI_PATH": str(comfyui)}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RuntimeError(f"building test models failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    tmp.rename(folder)
    return folder


def manifest(folder: pathlib.Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


C = types.SimpleNamespace()
"""ComfyUI's modules the builder uses (``C.utils`` …), imported by :func:`main` through the door."""

SD15_FULL = dict(
    use_checkpoint=False, image_size=32, out_channels=4, use_spatial_transformer=True, legacy=False,
    adm_in_channels=None, in_channels=4, model_channels=320, num_res_blocks=[2, 2, 2, 2],
    transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0], channel_mult=[1, 2, 4, 4], transformer_depth_middle=1,
    use_linear_in_transformer=False, context_dim=768,
    transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
    use_temporal_attention=False, use_temporal_resblock=False)
SD15_SMALL = dict(SD15_FULL, num_res_blocks=[1, 1], channel_mult=[1, 2], transformer_depth=[1, 1],
                  transformer_depth_output=[1, 1, 1, 1])
# A different family for the refusal test: SD2.x layout (1024-d context, linear projections).
SD2_SMALL = dict(SD15_SMALL, context_dim=1024, use_linear_in_transformer=True)
SD2_SMALL.pop("num_heads", None)

VAE_CONFIG = {'double_z': True, 'z_channels': 4, 'resolution': 256, 'in_channels': 3, 'out_ch': 3,
              'ch': 128, 'ch_mult': [1, 2, 4, 4], 'num_res_blocks': 2, 'attn_resolutions': [],
              'dropout': 0.0}

# The layer every test LoRA touches, in diffusers naming and ComfyUI (ldm) naming.
LORA_LAYERS = {
    "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k": "input_blocks.1.1.transformer_blocks.0.attn2.to_k",
    "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_v": "input_blocks.1.1.transformer_blocks.0.attn2.to_v",
    "up_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k": "output_blocks.2.1.transformer_blocks.0.attn2.to_k",
    "mid_block.attentions.0.transformer_blocks.0.attn1.to_q": "middle_block.1.transformer_blocks.0.attn1.to_q",
}


def randomize(module: torch.nn.Module, seed: int) -> dict:
    """Fill every parameter with fan-in-scaled normal weights (norm scales 1, biases 0) and return
    the state dict: ComfyUI builds its modules without initialising them."""
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for name, tensor in module.state_dict().items():
        if tensor.is_floating_point() and name.endswith("weight") and tensor.ndim >= 2:
            fan_in = math.prod(tensor.shape[1:])
            t = torch.randn(tensor.shape, generator=gen) / math.sqrt(fan_in)
        elif tensor.is_floating_point() and name.endswith("weight"):
            t = torch.ones(tensor.shape)
        elif tensor.is_floating_point() and name.endswith("bias"):
            t = torch.zeros(tensor.shape)
        else:
            t = tensor.clone()
        sd[name] = t
    return sd


def unet_state_dict(config: dict, family, seed: int) -> dict:
    model_config = family(dict(config))
    model = model_config.get_model({})
    sd = randomize(model.diffusion_model, seed)
    return {f"model.diffusion_model.{k}": v for k, v in sd.items()}


def clip_state_dict(seed: int) -> dict:
    clip = C.sd1_clip.SD1ClipModel()
    sd = randomize(clip, seed)
    saving = C.supported_models.SD15(dict(SD15_SMALL)).process_clip_state_dict_for_saving(sd)
    return {k: v for k, v in saving.items() if "position_ids" not in k}


def vae_state_dict(seed: int) -> dict:
    vae = C.autoencoder.AutoencoderKL(ddconfig=VAE_CONFIG, embed_dim=4)
    return {f"first_stage_model.{k}": v for k, v in randomize(vae, seed).items()}


def perturb(sd: dict, prefix: str, scale: float, seed: int) -> dict:
    """A "fine-tune": every float weight under ``prefix`` moved by a small relative random step."""
    gen = torch.Generator().manual_seed(seed)
    out = dict(sd)
    for k, v in sd.items():
        if k.startswith(prefix) and v.is_floating_point() and v.ndim >= 2:
            out[k] = v + scale * v.std() * torch.randn(v.shape, generator=gen)
    return out


def half(sd: dict) -> dict:
    return {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in sd.items()}


def detected_family(sd: dict) -> str:
    config = C.model_detection.model_config_from_unet(sd, "model.diffusion_model.")
    return type(config).__name__ if config is not None else "none"


def lora_factors(rank: int, in_dim: int, out_dim: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    down = torch.randn(rank, in_dim, generator=gen) / math.sqrt(in_dim)
    up = torch.randn(out_dim, rank, generator=gen) * 0.5
    return down, up


def attention_lora(unet_sd: dict, rank: int = 16) -> dict:
    """A kohya LoRA on every linear layer of every transformer block (q, k, v, out, ff, proj):
    the coverage of a typical SD1.5 LoRA, for the benchmark."""
    lora = {}
    for i, (key, weight) in enumerate(sorted(unet_sd.items())):
        if "transformer_blocks" not in key or not key.endswith(".weight") or weight.ndim != 2:
            continue
        name = "lora_unet_" + key[len("model.diffusion_model."):-len(".weight")].replace(".", "_")
        down, up = lora_factors(rank, weight.shape[1], weight.shape[0], seed=1000 + i)
        lora.update({f"{name}.lora_down.weight": down, f"{name}.lora_up.weight": up * 0.1,
                     f"{name}.alpha": torch.tensor(float(rank))})
    return lora


def key_format_loras(unet_sd: dict, rank: int = 4) -> dict:
    """The host tests' LoRAs: one delta written in three key spellings, one whose keys match
    nothing (:data:`LORA_LAYERS` names layers of the shrunk UNet only), and one that matches every
    layer but moves none (kohya spelling, all up weights zero: an untrained LoRA)."""
    kohya, diffusers, peft, nomatch, zero = {}, {}, {}, {}, {}
    for i, (diff_name, ldm_name) in enumerate(LORA_LAYERS.items()):
        weight = unet_sd[f"model.diffusion_model.{ldm_name}.weight"]
        down, up = lora_factors(rank, weight.shape[1], weight.shape[0], seed=100 + i)
        kname = "lora_unet_" + diff_name.replace(".", "_")
        kohya[f"{kname}.lora_down.weight"] = down
        kohya[f"{kname}.lora_up.weight"] = up
        kohya[f"{kname}.alpha"] = torch.tensor(float(rank))
        zero.update({f"{kname}.lora_down.weight": down, f"{kname}.lora_up.weight": torch.zeros_like(up),
                     f"{kname}.alpha": torch.tensor(float(rank))})
        # diffusers attention-processor format (train_dreambooth_lora.py, diffusers < 0.21)
        dname = "unet." + diff_name.replace(".to_", ".processor.to_")
        diffusers[f"{dname}_lora.down.weight"] = down
        diffusers[f"{dname}_lora.up.weight"] = up
        # PEFT format as saved by diffusers >= 0.21 (`unet.<module>.lora_A/B.weight`)
        peft[f"unet.{diff_name}.lora_A.weight"] = down
        peft[f"unet.{diff_name}.lora_B.weight"] = up
        nomatch[f"lora_unet_no_such_block_{i}_attn2_to_k.lora_down.weight"] = down
        nomatch[f"lora_unet_no_such_block_{i}_attn2_to_k.lora_up.weight"] = up
    return {"kohya": kohya, "diffusers": diffusers, "peft": peft, "nomatch": nomatch, "zero": zero}


def write_loras(out: str, unet_sd: dict, tag: str, rank: int = 4, key_formats: bool = True) -> dict:
    """The benchmark's LoRA on every transformer linear layer and, with ``key_formats``, the host
    tests' LoRAs (:func:`key_format_loras`); returns {format: file name}."""
    files = {**(key_format_loras(unet_sd, rank) if key_formats else {}), "attention": attention_lora(unet_sd)}
    names = {}
    for fmt, sd in files.items():
        name = f"finextract-test-{tag}-lora-{fmt}.safetensors"
        C.utils.save_torch_file(half(sd), os.path.join(out, "loras", name),
                                    metadata={"ss_network_dim": str(rank)})
        names[fmt] = name
    return names


def main():
    host.import_comfyui(cpu=True)  # before comfy.model_management: build on the CPU, whatever is present
    for name in ("model_detection", "sd1_clip", "supported_models", "utils", "ldm.models.autoencoder"):
        setattr(C, name.rsplit(".", 1)[-1], host.module(f"comfy.{name}"))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--full", action="store_true", help="full-size SD1.5 UNet (860 M parameters)")
    args = parser.parse_args()
    os.makedirs(os.path.join(args.out, "checkpoints"), exist_ok=True)
    os.makedirs(os.path.join(args.out, "loras"), exist_ok=True)
    tag = "full" if args.full else "small"
    config = SD15_FULL if args.full else SD15_SMALL

    unet = unet_state_dict(config, C.supported_models.SD15, seed=1)
    clip = clip_state_dict(seed=2)
    vae = vae_state_dict(seed=3)
    base = {**unet, **clip, **vae}
    unet_fine = perturb(base, "model.diffusion_model.", 0.05, seed=4)
    fine = perturb(unet_fine, "cond_stage_model.", 0.05, seed=5)
    roles = [("base", base, None), ("finetuned", fine, None)]
    if not args.full:  # refusal-test files, only needed once
        roles += [("other_family", {**unet_state_dict(SD2_SMALL, C.supported_models.SD20, seed=6), **vae}, None),
                  # the base's tensors under new metadata: another file, another sha256
                  ("resaved", base, {"modelspec.title": "base, re-saved"}),
                  # a DreamBooth run that froze the text encoder (SD1.5 files carry no text_projection)
                  ("unet_finetuned", unet_fine, None)]

    manifest = {"checkpoints": {}, "loras": {}}
    for role, sd, metadata in roles:
        name = f"finextract-test-{tag}-{role}.safetensors"
        C.utils.save_torch_file(half(sd), os.path.join(args.out, "checkpoints", name), metadata=metadata)
        manifest["checkpoints"][role] = {"file": name, "family": detected_family(sd)}
    del base, fine, unet_fine
    corrupt = f"finextract-test-{tag}-corrupt.safetensors"
    with open(os.path.join(args.out, "checkpoints", manifest["checkpoints"]["base"]["file"]), "rb") as f:
        head = f.read(1 << 16)
    with open(os.path.join(args.out, "checkpoints", corrupt), "wb") as f:
        f.write(head)  # a download cut short: valid header start, data missing
    manifest["checkpoints"]["corrupt"] = {"file": corrupt, "family": "none"}
    manifest["loras"] = write_loras(args.out, unet, tag, key_formats=not args.full)
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    print(json.dumps(manifest))


if __name__ == "__main__":
    main()
