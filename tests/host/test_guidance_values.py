"""The guidance nodes' *values* in a real ComfyUI, against references that do not use our code:

- Eq. 13 (k != 0) through FineXtractGuider equals the paper's eps-space formula computed here from
  the two models' raw outputs, read from ComfyUI's stock BasicGuider on the same x_t and sigma;
- method ``cfg`` equals ComfyUI's stock CFGGuider at the same scale and noise, also when the model
  carries ComfyUI's own CFG patches (RescaleCFG's sampler_cfg_function, CFGNorm's post-CFG hook);
- ``finextract`` with w' = 1, k = 0 equals the fine-tuned model alone (stock BasicGuider);
- a kohya LoRA and the same LoRA in diffusers and PEFT spelling give the same samples;
- a full pair's fine-tuned CLIP is the fine-tune's own exactly when its text encoder moved.

One evaluation at a chosen (x_t, sigma): SamplerCustomAdvanced with DisableNoise, a LoadLatent of
x_t and ManualSigmas "sigma, 0"; its ``denoised_output`` is the guider's x0 estimate at (x_t, sigma).
Models: the harness's random-weight SD1.5-architecture files (conftest); graph pieces:
``guidance_graphs.py``."""
import pytest
import torch

SIZE = 64
LATENT = (1, 4, SIZE // 8, SIZE // 8)


def pair_graph(models, pair, lora="kohya", strength=1.0):
    inputs = {"base_checkpoint": models.checkpoints["base"], "finetuned_checkpoint": "none"}
    for i in range(1, 4):
        inputs[f"lora_{i}"], inputs[f"strength_{i}"] = "none", 1.0
    if pair == "full":
        inputs["finetuned_checkpoint"] = models.checkpoints["finetuned"]
    else:
        inputs["lora_1"], inputs["strength_1"] = models.loras[lora], strength
    return {"L": {"class_type": "FineXtractDualModelLoader", "inputs": inputs},
            "P": {"class_type": "CLIPTextEncode", "inputs": {"text": "a photo of sks dog", "clip": ["L", 2]}},
            "N": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["L", 5]}}}


@pytest.fixture(scope="module")
def x_t(comfy, guidance_graphs):
    """Write x_t files for two sigmas into ComfyUI's input folder; {sigma: (file name, tensor)}.
    Values in the LATENT's units (ComfyUI scales them into the model's space and back; every
    quantity below is linear in them, so the eps-space algebra holds in either)."""
    gen = torch.Generator().manual_seed(3)
    files = {}
    for sigma in (14.6, 1.5):
        x = torch.randn(LATENT, generator=gen) * (1 + sigma ** 2) ** 0.5 / 0.18215
        files[sigma] = (guidance_graphs.write_latent(comfy, f"finextract-x-{sigma}.latent", x), x)
    return files


@pytest.mark.parametrize("pair", ["lora", "full"])
@pytest.mark.parametrize("w,k", [(3.0, -0.3), (5.0, 0.25)])
def test_eq13_equals_the_papers_eps_formula(comfy, comfy_models, guidance_graphs, x_t, pair, w, k):
    g = guidance_graphs
    graph = pair_graph(comfy_models, pair)
    for sigma, (name, x) in x_t.items():
        guided = g.denoised_at(comfy, graph, g.ours("finextract", w, k), name, sigma)
        # raw outputs of the two models at (x_t, sigma), from ComfyUI's stock unguided guider
        d_ft = g.denoised_at(comfy, graph, g.basic(("L", 1), "P"), name, sigma)
        d_base = g.denoised_at(comfy, graph, g.basic(("L", 0), "N"), name, sigma)
        # SD1.5 is an eps model: x_t = x0 + sigma * eps
        eps_ft, eps_base = (x - d_ft) / sigma, (x - d_base) / sigma
        eps = eps_ft + (w - 1) * (eps_ft - eps_base) + k * eps_base  # Eq. 13
        expected = x - sigma * eps
        g.assert_close(guided, expected, f"Eq. 13, {pair} pair, sigma {sigma}")
        without_k = x - sigma * (eps_ft + (w - 1) * (eps_ft - eps_base))
        g.assert_far(guided, without_k, f"the k term is visible at sigma {sigma}", rtol=1e-3)


@pytest.mark.parametrize("patch", [None, ("RescaleCFG", {"multiplier": 0.7}), ("CFGNorm", {"strength": 1.0})])
def test_cfg_equals_comfyuis_cfg_guider(comfy, comfy_models, guidance_graphs, patch):
    g = guidance_graphs
    graph = pair_graph(comfy_models, "lora")
    model = ("L", 1)
    if patch is not None:  # ComfyUI's own CFG hooks on the fine-tuned model: both guiders must run them
        graph["M"] = {"class_type": patch[0], "inputs": {"model": ["L", 1], **patch[1]}}
        model = ("M", 0)
    mine = g.sampled(comfy, graph, g.ours("cfg", 4.0, -0.02, finetuned=model))
    stock = g.sampled(comfy, graph, g.stock_cfg(model, 4.0))
    g.assert_close(mine, stock, f"cfg vs CFGGuider ({patch and patch[0]})", rtol=1e-5)
    if patch is not None:
        plain = g.sampled(comfy, graph, g.stock_cfg(("L", 1), 4.0))
        g.assert_far(stock, plain, f"{patch[0]} changes the samples")


@pytest.mark.parametrize("pair", ["lora", "full"])
def test_finextract_at_w1_k0_is_the_fine_tuned_model(comfy, comfy_models, guidance_graphs, pair):
    g = guidance_graphs
    graph = pair_graph(comfy_models, pair)
    mine = g.sampled(comfy, graph, g.ours("finextract", 1.0, 0.0))
    unguided = g.sampled(comfy, graph, g.basic(("L", 1), "P"))
    g.assert_close(mine, unguided, f"finextract w'=1 k=0 vs the fine-tuned model ({pair})")
    base = g.sampled(comfy, graph, g.basic(("L", 0), "P"))
    g.assert_far(unguided, base, "the fine-tune differs from its base")


def test_lora_spellings_give_the_same_samples(comfy, comfy_models, guidance_graphs):
    g = guidance_graphs
    out = {fmt: g.sampled(comfy, pair_graph(comfy_models, "lora", lora=fmt), g.ours("finextract", 3.0, -0.02))
           for fmt in ("kohya", "diffusers", "peft")}
    g.assert_close(out["diffusers"], out["kohya"], "diffusers vs kohya", rtol=1e-5)
    g.assert_close(out["peft"], out["kohya"], "PEFT vs kohya", rtol=1e-5)
    half = g.sampled(comfy, pair_graph(comfy_models, "lora", lora="kohya", strength=0.5), g.ours("finextract", 3.0, -0.02))
    g.assert_far(half, out["kohya"], "the LoRA's strength shows in the samples")


@pytest.mark.parametrize("finetuned,moved", [("finetuned", True), ("unet_finetuned", False)])
def test_full_pair_encodes_the_caption_with_its_own_text_encoder(comfy, comfy_models, guidance_graphs, finetuned,
                                                                  moved):
    """The loader builds a full fine-tune's CLIP only when its text encoder differs from the base's
    (else the base's serves both): the caption through the fine-tuned CLIP (output 2) and through
    the base's (output 5) gives other samples exactly when the text encoder moved."""
    g = guidance_graphs
    graph = pair_graph(comfy_models, "full")
    graph["L"]["inputs"]["finetuned_checkpoint"] = comfy_models.checkpoints[finetuned]
    graph["Pb"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "a photo of sks dog", "clip": ["L", 5]}}
    own = g.sampled(comfy, graph, g.basic(("L", 1), "P"))
    base = g.sampled(comfy, graph, g.basic(("L", 1), "Pb"))
    if moved:
        g.assert_far(own, base, "the fine-tuned text encoder's caption")
    else:
        g.assert_close(own, base, "a kept text encoder is the base's", rtol=0)
