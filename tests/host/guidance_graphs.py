"""Graph pieces the guidance value tests share (SD1.5 in ``test_guidance_values.py``, the other
families in ``test_families.py``): one evaluation of a guider at a chosen (x_t, sigma), a short
sampling run, and tolerances. Loaded by conftest (fixture ``guidance_graphs``).

One evaluation at (x_t, sigma): SamplerCustomAdvanced with DisableNoise, a LoadLatent of x_t and
ManualSigmas "sigma, 0"; its ``denoised_output`` is the guider's x0 estimate at (x_t, sigma)."""
from __future__ import annotations

import torch
from safetensors.torch import load, save_file


def ours(method, w, k, finetuned=("L", 1), base=("L", 0), positive="P", negative="N"):
    return {"class_type": "FineXtractGuider", "inputs": {
        "base": list(base), "finetuned": list(finetuned), "positive": [positive, 0], "negative": [negative, 0],
        "method": method, "w": w, "k": k}}


def basic(model, conditioning):
    return {"class_type": "BasicGuider", "inputs": {"model": list(model), "conditioning": [conditioning, 0]}}


def stock_cfg(model, scale, positive="P", negative="N"):
    return {"class_type": "CFGGuider", "inputs": {
        "model": list(model), "positive": [positive, 0], "negative": [negative, 0], "cfg": scale}}


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


def sampled(comfy, graph, guider, steps=3, seed=11, size=64, empty="EmptyLatentImage",
            model=("L", 1)) -> torch.Tensor:
    """A full euler run from RandomNoise(seed) on a ``size`` px empty latent (``empty``: the stock
    node that makes the family's latent) with ``guider``."""
    graph = {**graph, "G": guider,
             "Z": {"class_type": "RandomNoise", "inputs": {"noise_seed": seed}},
             "K": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
             "T": {"class_type": "BasicScheduler", "inputs": {"model": list(model), "scheduler": "normal",
                                                              "steps": steps, "denoise": 1.0}},
             "E": {"class_type": empty, "inputs": {"width": size, "height": size, "batch_size": 2}},
             "X": {"class_type": "SamplerCustomAdvanced", "inputs": {
                 "noise": ["Z", 0], "guider": ["G", 0], "sampler": ["K", 0], "sigmas": ["T", 0],
                 "latent_image": ["E", 0]}},
             "O": {"class_type": "SaveLatent", "inputs": {"samples": ["X", 0], "filename_prefix": "fx_value"}}}
    return _saved(comfy, comfy.run(graph))


def write_latent(comfy, name: str, x: torch.Tensor) -> str:
    """Put ``x`` in ComfyUI's input folder as a .latent file LoadLatent reads; returns its name."""
    comfy.input_dir.mkdir(parents=True, exist_ok=True)
    save_file({"latent_tensor": x, "latent_format_version_0": torch.tensor([])}, str(comfy.input_dir / name))
    return name


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
