"""The layout creators actually have: the diffusion model alone in ``diffusion_models/`` (BFL's
``flux1-dev.safetensors``: bare keys, no ``model.diffusion_model.``), text encoders and VAE in
files of their own, as ComfyUI's own FLUX.1 dev template loads them (Load Diffusion Model +
DualCLIPLoader + VAELoader). Through the Dual Model Loader in a real ComfyUI over HTTP, on the
random-weight files of ``family_models.py`` whose split files hold the checkpoints' own tensors:

- FLUX.1-dev: the loader on the diffusion-model-only base (``diffusion_models/<name>``), a stock
  CLIPLoader and a VAELoader of the FLUX VAE file give the same latents and the same decoded images
  as the all-in-one checkpoint for the same seeds, with a kohya LoRA and with a full fine-tune
  shipped as a diffusion model only;
- SD1.5: the same with a LoRA that also trains CLIP-L, whose text-encoder tensors the loader
  cannot apply to a CLIP it does not own: the report says so and how ComfyUI applies them (a
  LoraLoader on the user's CLIP), and doing that gives the checkpoint's samples, not doing it
  others; a full pair as two UNet-only files and as checkpoint base + UNet-only fine-tune;
- refusals that name the problem: a LoRA of another family on a diffusion-model base, a file in
  ``diffusion_models/`` that is no diffusion model (a LoRA), a pair of two families, a fine-tune
  whose tensor names do not match the base's (diffusers' against BFL's), a diffusion model only
  picked from ``checkpoints/``.

The one fake: FLUX.1 encodes prompts with CLIP-L + T5-XXL (DualCLIPLoader, type flux). T5-XXL
(4.7 G parameters) cannot exist here, so both layouts encode through a stock CLIPLoader of the
builder's real-size CLIP-L into a FLUX whose ``txt_in`` is 768 wide (as ``test_families``)."""
import io
import re

import numpy as np
import pytest
from PIL import Image

SPLIT = "diffusion_models/"
"""How the loader lists a file of ComfyUI's diffusion_models folder."""


@pytest.fixture(scope="module")
def split(family_comfy, family_models, tmp_path_factory):
    """(start, manifest): ``with start() as comfy:`` a ComfyUI of its own for each layout's run, so
    no process holds two FLUX pairs in turn (``ComfyClient.free`` does not give a freed pair's
    memory back). Measured peak RSS per process: FLUX full pair 6.0 GiB (checkpoints) and 6.3 GiB
    (diffusion models), FLUX LoRA pair 4.0 / 3.5 GiB, the refusals 5.9 GiB (a FLUX base beside
    the diffusers-named FLUX fine-tune), SD1.5 runs 1.7-2.5 GiB."""
    def start():
        return family_comfy(tmp_path_factory.mktemp("comfy-split"))

    return start, family_models[1]


def loader(base: str, finetuned: str = "none", lora: str = "none") -> dict:
    inputs = {"base_checkpoint": base, "finetuned_checkpoint": finetuned}
    for i in range(1, 4):
        inputs[f"lora_{i}"], inputs[f"strength_{i}"] = "none", 1.0
    inputs["lora_1"] = lora
    return {"class_type": "FineXtractDualModelLoader", "inputs": inputs}


def audit_graph(loader_node: dict, caption_clip, empty_clip, vae, flux: bool, extra=None) -> dict:
    """Loader → caption / empty prompt (FluxGuidance 3.5 on both for FLUX) → the FineXtract sampler
    (2 images, 2 steps, 64 px) → SaveLatent, and VAEDecode → SaveImage; the loader's report."""
    graph = {"L": loader_node, **(extra or {})}
    for node, text, clip in (("P", "a photo of sks dog", caption_clip), ("N", "", empty_clip)):
        encoded = node + "0" if flux else node
        graph[encoded] = {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": clip}}
        if flux:
            graph[node] = {"class_type": "FluxGuidance", "inputs": {"conditioning": [encoded, 0], "guidance": 3.5}}
    graph["S"] = {"class_type": "FineXtractModelGuidanceSampler", "inputs": {
        "base": ["L", 0], "finetuned": ["L", 1], "positive": ["P", 0], "negative": ["N", 0],
        "count": 2, "start": 0, "batch_size": 2, "seed": 7, "steps": 2, "sampler_name": "euler",
        "scheduler": "simple" if flux else "normal", "width": 64, "height": 64,
        "method": "finextract", "w": 3.0, "k": -0.02}}
    graph["O"] = {"class_type": "SaveLatent", "inputs": {"samples": ["S", 0], "filename_prefix": "fx_split"}}
    graph["D"] = {"class_type": "VAEDecode", "inputs": {"samples": ["S", 0], "vae": vae}}
    graph["I"] = {"class_type": "SaveImage", "inputs": {"images": ["D", 0], "filename_prefix": "fx_split"}}
    graph["R"] = {"class_type": "PreviewAny", "inputs": {"source": ["L", 4]}}
    return graph


def clip_loader(manifest) -> dict:
    return {"class_type": "CLIPLoader", "inputs": {"clip_name": manifest["flux"]["clip"], "type": "stable_diffusion"}}


def vae_loader(name: str) -> dict:
    return {"class_type": "VAELoader", "inputs": {"vae_name": name}}


def run(start, graph) -> dict:
    """The sampled latents, the decoded images (uint8) and the loader's report of one run, on a
    ComfyUI of its own."""
    from safetensors.torch import load

    with start() as comfy:
        out = comfy.run(graph, timeout=900)
        latents = load(comfy.view(out["O"]["latents"][0]))["latent_tensor"].float()
        images = np.stack([np.asarray(Image.open(io.BytesIO(comfy.view(i)))) for i in out["I"]["images"]])
    return {"latents": latents, "images": images, "report": out["R"]["text"][0]}


def assert_same(actual, expected, what, guidance_graphs):
    guidance_graphs.assert_close(actual["latents"], expected["latents"], f"{what}: latents", rtol=1e-6)
    assert np.array_equal(actual["images"], expected["images"]), f"{what}: decoded images differ"


def flux_graph(manifest, loader_node, split_layout: bool) -> dict:
    """The FLUX audit graph: the test's CLIP-L on both prompts; the VAE from VAELoader of the FLUX
    VAE file (split) or the checkpoint's (all-in-one)."""
    extra = {"C": clip_loader(manifest)}
    if split_layout:
        extra["V"] = vae_loader(manifest["flux"]["vae"])
    return audit_graph(loader_node, ["C", 0], ["C", 0], ["V", 0] if split_layout else ["L", 3], True, extra)


def test_flux_split_files_give_the_checkpoints_samples_with_a_lora(split, guidance_graphs):
    start, manifest = split
    entry = manifest["flux"]
    lora = entry["loras"]["kohya"]
    whole = run(start, flux_graph(manifest, loader(entry["checkpoints"]["base"], lora=lora), False))
    parts = run(start, flux_graph(manifest, loader(SPLIT + entry["diffusion_models"]["base"], lora=lora), True))
    assert f"base: {SPLIT}{entry['diffusion_models']['base']} (Flux, sha256" in parts["report"], parts["report"]
    assert "diffusion model only: this loader's clip, base_clip and vae outputs are empty" in parts["report"]
    applied, total = map(int, re.search(r"x1: (\d+)/(\d+) tensors applied", parts["report"]).groups())
    assert applied == total > 0 and "UNet fine-tuned" in parts["report"], parts["report"]
    assert "text encoder" not in parts["report"].split("\n")[1].split(";")[1], parts["report"]  # UNet only
    assert_same(parts, whole, "FLUX split layout vs all-in-one, kohya LoRA", guidance_graphs)


def test_flux_split_files_give_the_checkpoints_samples_with_a_full_fine_tune(split, guidance_graphs):
    start, manifest = split
    entry = manifest["flux"]
    whole = run(start, flux_graph(manifest, loader(entry["checkpoints"]["base"], entry["checkpoints"]["finetuned"]),
                                  False))
    unets = entry["diffusion_models"]
    parts = run(start, flux_graph(manifest, loader(SPLIT + unets["base"], SPLIT + unets["finetuned"]), True))
    assert f"fine-tune: full diffusion model {SPLIT}{unets['finetuned']} (Flux" in parts["report"], parts["report"]
    # the same UNet change is measured whichever layout the files have
    ratio = [re.search(r"UNet fine-tuned \(‖ΔW‖/‖W‖ = ([0-9.e-]+)\)", r["report"]).group(1) for r in (whole, parts)]
    assert ratio[0] == ratio[1], ratio
    assert_same(parts, whole, "FLUX split layout vs all-in-one, full fine-tune", guidance_graphs)


def sd15_whole(manifest, loader_node) -> dict:
    return audit_graph(loader_node, ["L", 2], ["L", 5], ["L", 3], False)


def test_sd15_unet_only_lora_and_its_text_encoder_tensors(split, guidance_graphs):
    """A kohya LoRA on 4 UNet and 2 CLIP-L layers: on the checkpoint it patches both; on the
    UNet-only base the UNet part, and the report says its 6 text-encoder tensors are not applied and
    that a LoraLoader on the user's CLIP applies them: with it the samples are the checkpoint's."""
    start, manifest = split
    entry = manifest["sd15"]
    assert entry["family"] == "SD15"
    lora = entry["loras"]["kohya"]
    whole = run(start, sd15_whole(manifest, loader(entry["checkpoints"]["base"], lora=lora)))
    assert "x1: 18/18 tensors applied (4 UNet layers, 2 text-encoder layers)" in whole["report"], whole["report"]
    split_loader = loader(SPLIT + entry["diffusion_models"]["base"], lora=lora)
    extra = {"C": clip_loader(manifest), "V": vae_loader(entry["vae"]),
             "T": {"class_type": "LoraLoader", "inputs": {"model": ["L", 0], "clip": ["C", 0], "lora_name": lora,
                                                          "strength_model": 0.0, "strength_clip": 1.0}}}
    parts = run(start, audit_graph(split_loader, ["T", 1], ["C", 0], ["V", 0], False, extra))
    text = parts["report"]
    assert "x1: 12/18 tensors applied (4 UNet layers, 0 text-encoder layers)" in text, text
    assert "its 6 text-encoder tensors are NOT applied" in text and "LoraLoader on that CLIP" in text, text
    assert_same(parts, whole, "SD1.5 UNet-only + LoraLoader on the CLIP vs checkpoint, kohya LoRA", guidance_graphs)
    extra.pop("T")
    base_text = run(start, audit_graph(split_loader, ["C", 0], ["C", 0], ["V", 0], False, extra))
    guidance_graphs.assert_far(base_text["latents"], whole["latents"],
                               "without the LoraLoader the caption goes through the base text encoder")


def test_sd15_unet_only_full_pair_and_mixed_layouts(split, guidance_graphs):
    start, manifest = split
    entry = manifest["sd15"]
    ckpt, unets = entry["checkpoints"], entry["diffusion_models"]
    whole = run(start, sd15_whole(manifest, loader(ckpt["base"], ckpt["finetuned"])))
    extra = {"C": clip_loader(manifest), "V": vae_loader(entry["vae"])}
    parts = run(start, audit_graph(loader(SPLIT + unets["base"], SPLIT + unets["finetuned"]),
                                   ["C", 0], ["C", 0], ["V", 0], False, extra))
    assert_same(parts, whole, "SD1.5 UNet-only pair vs checkpoint pair", guidance_graphs)
    mixed = run(start, sd15_whole(manifest, loader(ckpt["base"], SPLIT + unets["finetuned"])))
    assert "text encoder: the base's (the fine-tune is a diffusion model only)" in mixed["report"], mixed["report"]
    assert_same(mixed, whole, "SD1.5 checkpoint base + UNet-only fine-tune vs checkpoint pair", guidance_graphs)


def refused(comfy, loader_node) -> str:
    comfy.free()
    return comfy.run_expect_error({"L": loader_node, "R": {"class_type": "PreviewAny", "inputs": {"source": ["L", 4]}}})


def test_bad_split_pairs_are_refused_saying_why(split):
    start, manifest = split
    with start() as comfy:
        check_refusals(comfy, manifest)


def check_refusals(comfy, manifest):
    flux = SPLIT + manifest["flux"]["diffusion_models"]["base"]
    error = refused(comfy, loader(flux, lora=manifest["sd3"]["loras"]["kohya"]))
    assert f"does not fit base diffusion model {flux!r} (FLUX)" in error, error
    assert "spelled as for a SD3 LoRA" in error and "load it with a SD3 base" in error, error

    misplaced = SPLIT + manifest["misplaced_lora"]
    error = refused(comfy, loader(misplaced, lora=manifest["flux"]["loras"]["kohya"]))
    assert f"base diffusion model {misplaced!r}: ComfyUI recognises no diffusion model in it" in error, error
    assert "It holds LoRA tensors" in error and "pick it in a lora slot" in error, error

    sd15 = SPLIT + manifest["sd15"]["diffusion_models"]["finetuned"]
    error = refused(comfy, loader(flux, sd15))
    assert f"is Flux but fine-tuned diffusion model {sd15!r} is SD15" in error, error

    diffusers = SPLIT + manifest["flux"]["diffusion_models"]["finetuned_diffusers"]
    error = refused(comfy, loader(flux, diffusers))
    assert f"fine-tuned diffusion model {diffusers!r} shares no diffusion-model tensor" in error, error
    assert "e.g. base 'double_blocks." in error and "fine-tune 'context_embedder." in error, error

    unet_in_checkpoints = manifest["sd15"]["misplaced_unet"]
    error = refused(comfy, loader(unet_in_checkpoints, lora=manifest["sd15"]["loras"]["kohya"]))
    assert "holds a diffusion model only" in error and "ComfyUI/models/diffusion_models" in error, error
