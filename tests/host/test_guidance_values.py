"""The guidance nodes' *values* in a real ComfyUI, against references that do not use our code:

- Eq. 13 (k != 0) through FineXtractGuider equals the paper's eps-space formula computed here from
  the two models' raw outputs, read from ComfyUI's stock BasicGuider on the same x_t and sigma;
- method ``cfg`` equals ComfyUI's stock CFGGuider at the same scale and noise, also when the model
  carries ComfyUI's own CFG patches (RescaleCFG's sampler_cfg_function, CFGNorm's post-CFG hook);
- ``finextract`` with w' = 1, k = 0 equals the fine-tuned model alone (stock BasicGuider);
- a kohya LoRA and the same LoRA in diffusers and PEFT spelling give the same samples.

One evaluation at a chosen (x_t, sigma): SamplerCustomAdvanced with DisableNoise, a LoadLatent of
x_t and ManualSigmas "sigma, 0"; its ``denoised_output`` is the guider's x0 estimate at (x_t, sigma).
Models: the harness's random-weight SD1.5-architecture files (conftest)."""
import pytest
import torch
from safetensors.torch import load, save_file

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


def ours(method, w, k, finetuned=("L", 1)):
    return {"class_type": "FineXtractGuider", "inputs": {
        "base": ["L", 0], "finetuned": list(finetuned), "positive": ["P", 0], "negative": ["N", 0],
        "method": method, "w": w, "k": k}}


def basic(model, conditioning):
    return {"class_type": "BasicGuider", "inputs": {"model": list(model), "conditioning": [conditioning, 0]}}


def stock_cfg(model, scale):
    return {"class_type": "CFGGuider", "inputs": {
        "model": list(model), "positive": ["P", 0], "negative": ["N", 0], "cfg": scale}}


def denoised_at(comfy, graph, guider, latent_name, sigma) -> torch.Tensor:
    """The guider's x0 estimate at (x_t = the .latent file, sigma): one euler step to 0, no noise."""
    graph = {**graph, "G": guider,
             "Z": {"class_type": "DisableNoise", "inputs": {}},
             "K": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
             "T": {"class_type": "ManualSigmas", "inputs": {"sigmas": f"{sigma}, 0"}},
             "X0": {"class_type": "LoadLatent", "inputs": {"latent": latent_name}},
             "X": {"class_type": "SamplerCustomAdvanced", "inputs": {
                 "noise": ["Z", 0], "guider": ["G", 0], "sampler": ["K", 0], "sigmas": ["T", 0],
                 "latent_image": ["X0", 0]}},
             "O": {"class_type": "SaveLatent", "inputs": {"samples": ["X", 1], "filename_prefix": "fx_value"}}}
    return _saved(comfy, comfy.run(graph))


def sampled(comfy, graph, guider, steps=3, seed=11) -> torch.Tensor:
    """A full euler run from RandomNoise(seed) on a 64 px empty latent with ``guider``."""
    graph = {**graph, "G": guider,
             "Z": {"class_type": "RandomNoise", "inputs": {"noise_seed": seed}},
             "K": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
             "T": {"class_type": "BasicScheduler", "inputs": {"model": ["L", 1], "scheduler": "normal",
                                                              "steps": steps, "denoise": 1.0}},
             "E": {"class_type": "EmptyLatentImage", "inputs": {"width": SIZE, "height": SIZE, "batch_size": 2}},
             "X": {"class_type": "SamplerCustomAdvanced", "inputs": {
                 "noise": ["Z", 0], "guider": ["G", 0], "sampler": ["K", 0], "sigmas": ["T", 0],
                 "latent_image": ["E", 0]}},
             "O": {"class_type": "SaveLatent", "inputs": {"samples": ["X", 0], "filename_prefix": "fx_value"}}}
    return _saved(comfy, comfy.run(graph))


def _saved(comfy, outputs) -> torch.Tensor:
    return load(comfy.view(outputs["O"]["latents"][0]))["latent_tensor"].float()


def assert_close(actual, expected, what, rtol=2e-4):
    scale = float(expected.abs().max())
    error = float((actual - expected).abs().max())
    assert error <= rtol * scale, f"{what}: max |diff| {error:.3g} > {rtol:g} x {scale:.3g}"


def assert_far(actual, expected, what, rtol=1e-2):
    scale = float(expected.abs().max())
    error = float((actual - expected).abs().max())
    assert error > rtol * scale, f"{what}: max |diff| {error:.3g} <= {rtol:g} x {scale:.3g}"


@pytest.fixture(scope="module")
def x_t(comfy):
    """Write x_t files for two sigmas into ComfyUI's input folder; {sigma: (file name, tensor)}.
    Values in the LATENT's units (ComfyUI scales them into the model's space and back; every
    quantity below is linear in them, so the eps-space algebra holds in either)."""
    gen = torch.Generator().manual_seed(3)
    files = {}
    for sigma in (14.6, 1.5):
        x = torch.randn(LATENT, generator=gen) * (1 + sigma ** 2) ** 0.5 / 0.18215
        name = f"finextract-x-{sigma}.latent"
        comfy.input_dir.mkdir(parents=True, exist_ok=True)
        save_file({"latent_tensor": x, "latent_format_version_0": torch.tensor([])}, str(comfy.input_dir / name))
        files[sigma] = (name, x)
    return files


@pytest.mark.parametrize("pair", ["lora", "full"])
@pytest.mark.parametrize("w,k", [(3.0, -0.3), (5.0, 0.25)])
def test_eq13_equals_the_papers_eps_formula(comfy, comfy_models, x_t, pair, w, k):
    graph = pair_graph(comfy_models, pair)
    for sigma, (name, x) in x_t.items():
        guided = denoised_at(comfy, graph, ours("finextract", w, k), name, sigma)
        # raw outputs of the two models at (x_t, sigma), from ComfyUI's stock unguided guider
        d_ft = denoised_at(comfy, graph, basic(("L", 1), "P"), name, sigma)
        d_base = denoised_at(comfy, graph, basic(("L", 0), "N"), name, sigma)
        # SD1.5 is an eps model: x_t = x0 + sigma * eps
        eps_ft, eps_base = (x - d_ft) / sigma, (x - d_base) / sigma
        eps = eps_ft + (w - 1) * (eps_ft - eps_base) + k * eps_base  # Eq. 13
        expected = x - sigma * eps
        assert_close(guided, expected, f"Eq. 13, {pair} pair, sigma {sigma}")
        without_k = x - sigma * (eps_ft + (w - 1) * (eps_ft - eps_base))
        assert_far(guided, without_k, f"the k term is visible at sigma {sigma}", rtol=1e-3)


@pytest.mark.parametrize("patch", [None, ("RescaleCFG", {"multiplier": 0.7}), ("CFGNorm", {"strength": 1.0})])
def test_cfg_equals_comfyuis_cfg_guider(comfy, comfy_models, patch):
    graph = pair_graph(comfy_models, "lora")
    model = ("L", 1)
    if patch is not None:  # ComfyUI's own CFG hooks on the fine-tuned model: both guiders must run them
        graph["M"] = {"class_type": patch[0], "inputs": {"model": ["L", 1], **patch[1]}}
        model = ("M", 0)
    mine = sampled(comfy, graph, ours("cfg", 4.0, -0.02, finetuned=model))
    stock = sampled(comfy, graph, stock_cfg(model, 4.0))
    assert_close(mine, stock, f"cfg vs CFGGuider ({patch and patch[0]})", rtol=1e-5)
    if patch is not None:
        plain = sampled(comfy, graph, stock_cfg(("L", 1), 4.0))
        assert_far(stock, plain, f"{patch[0]} changes the samples")


@pytest.mark.parametrize("pair", ["lora", "full"])
def test_finextract_at_w1_k0_is_the_fine_tuned_model(comfy, comfy_models, pair):
    graph = pair_graph(comfy_models, pair)
    mine = sampled(comfy, graph, ours("finextract", 1.0, 0.0))
    unguided = sampled(comfy, graph, basic(("L", 1), "P"))
    assert_close(mine, unguided, f"finextract w'=1 k=0 vs the fine-tuned model ({pair})")
    base = sampled(comfy, graph, basic(("L", 0), "P"))
    assert_far(unguided, base, "the fine-tune differs from its base")


def test_lora_spellings_give_the_same_samples(comfy, comfy_models):
    out = {fmt: sampled(comfy, pair_graph(comfy_models, "lora", lora=fmt), ours("finextract", 3.0, -0.02))
           for fmt in ("kohya", "diffusers", "peft")}
    assert_close(out["diffusers"], out["kohya"], "diffusers vs kohya", rtol=1e-5)
    assert_close(out["peft"], out["kohya"], "PEFT vs kohya", rtol=1e-5)
    half = sampled(comfy, pair_graph(comfy_models, "lora", lora="kohya", strength=0.5), ours("finextract", 3.0, -0.02))
    assert_far(half, out["kohya"], "the LoRA's strength shows in the samples")
