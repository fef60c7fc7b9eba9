"""The families creators train LoRAs for today — SDXL ε, SDXL v-prediction, FLUX.1-dev, SD3.5 — in a
real ComfyUI over HTTP, with architecture-true random-weight files (``family_models.py``: which
parts are full size and which are shrunk, and why):

- the Dual Model Loader names each family, pairs base + full fine-tune and base + LoRA, and applies
  every tensor of the LoRA spellings creators ship (kohya, diffusers/PEFT);
- Eq. 13 through FineXtractGuider equals the paper's eps-space formula computed here from the two
  models' raw outputs (stock BasicGuider), for each parameterisation: ε and v (x_t = x0 + σ·eps in
  ComfyUI's sigma space) and rectified flow (x_t = (1 − σ)·x0 + σ·eps, the velocity v = eps − x0);
- method ``cfg`` equals ComfyUI's stock CFGGuider; ``finextract`` at w′ = 1, k = 0 equals the
  fine-tuned model alone (for FLUX also through a LoRA on slices of fused weights);
- a LoRA of another family, or of a family the pack does not handle, is refused saying so.

FLUX's text: T5-XXL cannot exist here, so the prompt goes through a real-size CLIP-L (stock
CLIPLoader) into a FLUX whose ``txt_in`` is 768 wide; both conditionings carry FluxGuidance 3.5
(the distilled guidance value; docs/guidance.md says why the empty prompt takes it too)."""
import re

import pytest
import torch

FAMILIES = {
    # ComfyUI family, parameterisation, latent_formats (scale, shift), latent channels, sigmas, empty-latent node
    "sdxl": dict(family="SDXL", flow=False, scale=0.13025, shift=0.0, channels=4, sigmas=(14.6, 1.5),
                 empty="EmptyLatentImage"),
    "sdxl_v": dict(family="SDXL", flow=False, scale=0.13025, shift=0.0, channels=4, sigmas=(14.6, 1.5),
                   empty="EmptyLatentImage"),
    "flux": dict(family="Flux", flow=True, scale=0.3611, shift=0.1159, channels=16, sigmas=(0.9, 0.3),
                 empty="EmptySD3LatentImage"),
    "sd3": dict(family="SD3", flow=True, scale=1.5305, shift=0.0609, channels=16, sigmas=(0.9, 0.3),
                empty="EmptySD3LatentImage"),
}
PAIRS = [("sdxl", "lora"), ("sdxl", "full"), ("sdxl_v", "lora"), ("flux", "lora"), ("flux", "full"),
         ("sd3", "lora"), ("sd3", "full")]
SIZE = 64


@pytest.fixture(scope="module")
def manifest(family_models):
    return family_models[1]


def loader(manifest, fam, pair="lora", lora="peft", base=None):
    entry = manifest[fam]
    inputs = {"base_checkpoint": base or entry["checkpoints"]["base"], "finetuned_checkpoint": "none"}
    for i in range(1, 4):
        inputs[f"lora_{i}"], inputs[f"strength_{i}"] = "none", 1.0
    if pair == "full":
        inputs["finetuned_checkpoint"] = entry["checkpoints"]["finetuned"]
    else:
        inputs["lora_1"] = lora if lora.endswith(".safetensors") else entry["loras"][lora]
    return {"L": {"class_type": "FineXtractDualModelLoader", "inputs": inputs}}


def pair_graph(manifest, fam, pair="lora", lora="peft"):
    """Loader, caption P (fine-tuned text encoder) and empty prompt N (base text encoder)."""
    graph = loader(manifest, fam, pair, lora)
    if fam == "flux":  # no text encoder in the file: CLIP-L beside it, FluxGuidance on both prompts
        graph["C"] = {"class_type": "CLIPLoader", "inputs": {"clip_name": manifest["flux"]["clip"],
                                                             "type": "stable_diffusion"}}
        clips = (["C", 0], ["C", 0])
    else:
        clips = (["L", 2], ["L", 5])
    for node, text, clip in (("P", "a photo of sks dog", clips[0]), ("N", "", clips[1])):
        encoded = node + "0" if fam == "flux" else node
        graph[encoded] = {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": clip}}
        if fam == "flux":
            graph[node] = {"class_type": "FluxGuidance", "inputs": {"conditioning": [encoded, 0], "guidance": 3.5}}
    return graph


def report(comfy, graph) -> str:
    graph = {**graph, "R": {"class_type": "PreviewAny", "inputs": {"source": ["L", 4]}}}
    return comfy.run(graph)["R"]["text"][0]


@pytest.mark.parametrize("fam", list(FAMILIES))
def test_loader_detects_the_family_and_applies_every_spelling(comfy_families, manifest, fam):
    expected = FAMILIES[fam]["family"]
    assert manifest[fam]["family"] == expected  # ComfyUI's model_detection, at build time
    for fmt, file in manifest[fam]["loras"].items():
        text = report(comfy_families, loader(manifest, fam, lora=fmt))
        assert f"({expected}, sha256" in text, text
        applied, total = map(int, re.search(r"x1: (\d+)/(\d+) tensors applied", text).groups())
        assert applied == total > 0, f"{file}: {text}"
        assert "UNet fine-tuned" in text
        if fam.startswith("sdxl"):  # lora_te1_/lora_te2_, text_encoder./text_encoder_2.
            assert "2 text-encoder layers" in text and "text encoder fine-tuned" in text, text
    if "finetuned" in manifest[fam]["checkpoints"]:
        text = report(comfy_families, loader(manifest, fam, "full"))
        assert "fine-tune: full checkpoint" in text and "UNet fine-tuned" in text, text


def to_model(t, spec):
    """LATENT units → the model's space (ComfyUI's latent_format.process_in: (x − shift)·scale)."""
    return (t - spec["shift"]) * spec["scale"]


def from_model(t, spec):
    return t / spec["scale"] + spec["shift"]


def eq13_from_the_paper(spec, x_latent, d_ft, d_base, sigma, w, k, with_k=True):
    """Eq. 13 computed here, in eps space, from the two models' x0 predictions (LATENT units)."""
    x, d_ft, d_base = to_model(x_latent, spec), to_model(d_ft, spec), to_model(d_base, spec)
    if spec["flow"]:
        # rectified flow: x_t = (1 − σ)·x0 + σ·eps; the model's velocity v = eps − x0, and ComfyUI's
        # CONST returns x0 = x_t − σ·v. DisableNoise leaves x_t = (1 − σ)·latent (CONST.noise_scaling).
        x_t = (1 - sigma) * x
        eps_ft = x_t + (1 - sigma) * (x_t - d_ft) / sigma
        eps_base = x_t + (1 - sigma) * (x_t - d_base) / sigma
    else:  # ε and v models in ComfyUI's sigma space: x_t = x0 + σ·eps
        x_t = x
        eps_ft, eps_base = (x_t - d_ft) / sigma, (x_t - d_base) / sigma
    eps = eps_ft + (w - 1) * (eps_ft - eps_base) + (k * eps_base if with_k else 0)
    x0 = (x_t - sigma * eps) / (1 - sigma) if spec["flow"] else x_t - sigma * eps
    return from_model(x0, spec)


@pytest.mark.parametrize("fam,pair", PAIRS)
def test_eq13_equals_the_papers_eps_formula(comfy_families, manifest, guidance_graphs, fam, pair):
    g, spec, w, k = guidance_graphs, FAMILIES[fam], 3.0, -0.3
    graph = pair_graph(manifest, fam, pair)
    gen = torch.Generator().manual_seed(5)
    for sigma in spec["sigmas"]:
        spread = 1.0 if spec["flow"] else (1 + sigma ** 2) ** 0.5
        x = from_model(torch.randn(1, spec["channels"], SIZE // 8, SIZE // 8, generator=gen) * spread, spec)
        name = g.write_latent(comfy_families, f"fx-{fam}-{sigma}.latent", x)
        guided = g.denoised_at(comfy_families, graph, g.ours("finextract", w, k), name, sigma)
        d_ft = g.denoised_at(comfy_families, graph, g.basic(("L", 1), "P"), name, sigma)
        d_base = g.denoised_at(comfy_families, graph, g.basic(("L", 0), "N"), name, sigma)
        g.assert_close(guided, eq13_from_the_paper(spec, x, d_ft, d_base, sigma, w, k),
                       f"Eq. 13, {fam} {pair} pair, sigma {sigma}")
        g.assert_far(guided, eq13_from_the_paper(spec, x, d_ft, d_base, sigma, w, k, with_k=False),
                     f"the k term is visible at sigma {sigma}", rtol=1e-3)


@pytest.mark.parametrize("fam", list(FAMILIES))
def test_cfg_equals_comfyuis_cfg_guider(comfy_families, manifest, guidance_graphs, fam):
    g, empty = guidance_graphs, FAMILIES[fam]["empty"]
    graph = pair_graph(manifest, fam)
    mine = g.sampled(comfy_families, graph, g.ours("cfg", 4.0, -0.02), steps=2, empty=empty)
    stock = g.sampled(comfy_families, graph, g.stock_cfg(("L", 1), 4.0), steps=2, empty=empty)
    g.assert_close(mine, stock, f"cfg vs CFGGuider ({fam})", rtol=1e-5)


@pytest.mark.parametrize("fam,lora", [("sdxl", "kohya"), ("sdxl_v", "peft"), ("flux", "kohya"), ("flux", "peft"),
                                      ("sd3", "peft")])
def test_finextract_at_w1_k0_is_the_fine_tuned_model(comfy_families, manifest, guidance_graphs, fam, lora):
    """The masked LoRA branch on the base's weights equals ComfyUI's merged fine-tuned model; FLUX's
    and SD3's diffusers LoRAs patch slices of fused qkv / linear1 weights."""
    g, empty = guidance_graphs, FAMILIES[fam]["empty"]
    graph = pair_graph(manifest, fam, lora=lora)
    mine = g.sampled(comfy_families, graph, g.ours("finextract", 1.0, 0.0), steps=2, empty=empty)
    unguided = g.sampled(comfy_families, graph, g.basic(("L", 1), "P"), steps=2, empty=empty)
    g.assert_close(mine, unguided, f"finextract w'=1 k=0 vs the fine-tuned model ({fam}, {lora})")
    base = g.sampled(comfy_families, graph, g.basic(("L", 0), "P"), steps=2, empty=empty)
    g.assert_far(unguided, base, "the fine-tune differs from its base")


def test_sdxl_lora_spellings_give_the_same_samples(comfy_families, manifest, guidance_graphs):
    """One delta in kohya (alpha = rank) and PEFT spelling, UNet and both text encoders."""
    g = guidance_graphs
    out = {fmt: g.sampled(comfy_families, pair_graph(manifest, "sdxl", lora=fmt), g.ours("finextract", 3.0, -0.02),
                          steps=2) for fmt in ("kohya", "peft")}
    g.assert_close(out["peft"], out["kohya"], "PEFT vs kohya", rtol=1e-5)


def test_lora_of_another_family_is_refused_naming_it(comfy_families, manifest):
    error = comfy_families.run_expect_error(loader(manifest, "sd3", lora=manifest["flux"]["loras"]["kohya"]))
    assert "does not fit base checkpoint" in error and "(SD3)" in error
    assert "spelled as for a FLUX LoRA" in error and "load it with a FLUX base" in error, error


def test_lora_of_a_family_the_pack_does_not_handle_is_refused_saying_so(comfy_families, manifest):
    error = comfy_families.run_expect_error(loader(manifest, "sd3", lora=manifest["unhandled_lora"]))
    assert manifest["unhandled_lora"] in error
    assert "spelled as for a Qwen-Image LoRA" in error and "a family this pack does not handle" in error, error
