"""The guidance nodes in a real ComfyUI, over HTTP: loading pairs, the refusals, the three methods
through the all-in-one sampler and through FineXtractGuider + SamplerCustomAdvanced.

Models: random-weight SD1.5-architecture files from bench/sd15_models.py (see conftest). Sizes are tiny
(64 px, 3 steps) so the whole module runs in well under a minute of sampling."""
import json

import pytest
import torch
from safetensors.torch import load

SIZE = 64
STEPS = 3


def loader(models, finetuned="none", loras=()):
    inputs = {"base_checkpoint": models.checkpoints["base"], "finetuned_checkpoint": finetuned}
    for i in range(1, 4):
        name, strength = loras[i - 1] if i <= len(loras) else ("none", 1.0)
        inputs[f"lora_{i}"], inputs[f"strength_{i}"] = name, strength
    return {"L": {"class_type": "FineXtractDualModelLoader", "inputs": inputs},
            "P": {"class_type": "CLIPTextEncode", "inputs": {"text": "a photo of sks dog", "clip": ["L", 2]}},
            "N": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["L", 5]}},
            "R": {"class_type": "PreviewAny", "inputs": {"source": ["L", 4]}}}


def all_in_one(graph, method, w=3.0, k=-0.02, count=2, start=0, batch_size=2, sampler="ddim", seed=5):
    graph = dict(graph)
    graph["S"] = {"class_type": "FineXtractModelGuidanceSampler", "inputs": {
        "base": ["L", 0], "finetuned": ["L", 1], "positive": ["P", 0], "negative": ["N", 0],
        "count": count, "start": start, "batch_size": batch_size, "seed": seed, "steps": STEPS,
        "sampler_name": sampler, "scheduler": "normal", "width": SIZE, "height": SIZE,
        "method": method, "w": w, "k": k}}
    graph["O"] = {"class_type": "SaveLatent", "inputs": {"samples": ["S", 0], "filename_prefix": f"fx_{method}"}}
    return graph


def with_guider(graph, method, w=3.0, k=-0.02):
    graph = dict(graph)
    graph.update({
        "G": {"class_type": "FineXtractGuider", "inputs": {
            "base": ["L", 0], "finetuned": ["L", 1], "positive": ["P", 0], "negative": ["N", 0],
            "method": method, "w": w, "k": k}},
        "Z": {"class_type": "RandomNoise", "inputs": {"noise_seed": 11}},
        "K": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "T": {"class_type": "BasicScheduler", "inputs": {"model": ["L", 1], "scheduler": "normal", "steps": STEPS, "denoise": 1.0}},
        "E": {"class_type": "EmptyLatentImage", "inputs": {"width": SIZE, "height": SIZE, "batch_size": 2}},
        "X": {"class_type": "SamplerCustomAdvanced", "inputs": {
            "noise": ["Z", 0], "guider": ["G", 0], "sampler": ["K", 0], "sigmas": ["T", 0], "latent_image": ["E", 0]}},
        "O": {"class_type": "SaveLatent", "inputs": {"samples": ["X", 0], "filename_prefix": f"fxg_{method}"}},
    })
    return graph


def latents(comfy, outputs) -> torch.Tensor:
    item = outputs["O"]["latents"][0]
    return load(comfy.view(item))["latent_tensor"].float()


def same(a, b) -> bool:
    """Equal up to float reordering between batch sizes (random-weight latents reach ~1e2)."""
    return torch.allclose(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()))


def differ(a, b) -> bool:
    return (a - b).abs().max() > 1e-2 * float(b.abs().max())


def test_nodes_are_listed_with_tooltips(comfy, comfy_models):
    info = comfy.object_info()
    for node in ("FineXtractDualModelLoader", "FineXtractGuider", "FineXtractModelGuidanceSampler"):
        assert info[node]["category"] == "finextract"
        assert info[node]["description"]
        for spec in info[node]["input"]["required"].values():
            assert spec[1].get("tooltip"), (node, spec)
    lora_options = info["FineXtractDualModelLoader"]["input"]["required"]["lora_1"][1]["options"]
    assert comfy_models.loras["kohya"] in lora_options


@pytest.mark.parametrize("fmt,tensors", [("kohya", 12), ("diffusers", 8), ("peft", 8)])
def test_lora_formats_apply_fully(comfy, comfy_models, fmt, tensors):
    graph = loader(comfy_models, loras=[(comfy_models.loras[fmt], 1.0)])
    report = comfy.run({k: graph[k] for k in ("L", "R")})["R"]["text"][0]
    assert f"{tensors}/{tensors} tensors applied (4 UNet layers" in report
    assert comfy_models.checkpoints["base"] in report


def test_lora_matching_nothing_is_refused(comfy, comfy_models):
    graph = loader(comfy_models, loras=[(comfy_models.loras["nomatch"], 1.0)])
    error = comfy.run_expect_error({k: graph[k] for k in ("L", "R")})
    assert comfy_models.loras["nomatch"] in error and comfy_models.checkpoints["base"] in error
    assert "0 of 8 tensors" in error


def test_pair_of_two_families_is_refused(comfy, comfy_models):
    graph = loader(comfy_models, finetuned=comfy_models.checkpoints["other_family"])
    error = comfy.run_expect_error({k: graph[k] for k in ("L", "R")})
    assert comfy_models.checkpoints["other_family"] in error and comfy_models.checkpoints["base"] in error
    assert "SD15" in error and "SD20" in error


def test_corrupt_file_is_refused(comfy, comfy_models):
    graph = loader(comfy_models, finetuned=comfy_models.checkpoints["corrupt"])
    error = comfy.run_expect_error({k: graph[k] for k in ("L", "R")})
    assert comfy_models.checkpoints["corrupt"] in error and "cannot be read" in error


def test_full_pair_reports_a_fine_tuned_text_encoder(comfy, comfy_models):
    graph = loader(comfy_models, finetuned=comfy_models.checkpoints["finetuned"])
    report = comfy.run({k: graph[k] for k in ("L", "R")})["R"]["text"][0]
    assert "full checkpoint" in report and "text encoder fine-tuned" in report


@pytest.mark.parametrize("pair", ["lora", "full"])
def test_three_methods_through_the_all_in_one_sampler(comfy, comfy_models, pair):
    graph = loader(comfy_models, **({"loras": [(comfy_models.loras["kohya"], 1.0)]} if pair == "lora"
                                    else {"finetuned": comfy_models.checkpoints["finetuned"]}))
    out = {}
    for method in ("finextract", "cfg", "direct"):
        outputs = comfy.run(all_in_one(graph, method))
        out[method] = latents(comfy, outputs)
        record = json.loads(outputs["S"]["text"][0])
        assert record["method"] == method and record["count"] == 2 and record["steps"] == STEPS
        assert record["models"]["finetuned"]["finetune"]["kind"] == ("lora" if pair == "lora" else "checkpoint")
        assert len(record["models"]["base"]["base"]["sha256"]) == 64
    assert out["finextract"].shape == (2, 4, SIZE // 8, SIZE // 8)
    assert torch.isfinite(out["finextract"]).all()
    for a, b in (("finextract", "cfg"), ("finextract", "direct"), ("cfg", "direct")):
        assert differ(out[a], out[b]), (a, b)


@pytest.mark.parametrize("sampler", ["ddim", "euler_ancestral"])
def test_image_i_alone_equals_image_i_of_a_batch(comfy, comfy_models, sampler):
    graph = loader(comfy_models, loras=[(comfy_models.loras["kohya"], 1.0)])
    batch = latents(comfy, comfy.run(all_in_one(graph, "finextract", count=3, batch_size=3, sampler=sampler)))
    alone = latents(comfy, comfy.run(all_in_one(graph, "finextract", count=1, start=2, batch_size=1, sampler=sampler)))
    assert same(batch[2], alone[0])
    assert differ(batch[1], batch[2])


def test_lora_branch_is_the_fine_tuned_model(comfy, comfy_models):
    """With w' = 1, k = 0 model guidance is eps_ft(x, c) alone: the masked LoRA branch (base weights
    + LoRA on the caption rows) must then equal ComfyUI's merged-weight fine-tuned model (direct)."""
    graph = loader(comfy_models, loras=[(comfy_models.loras["peft"], 1.0)])
    via_branch = latents(comfy, comfy.run(all_in_one(graph, "finextract", w=1.0, k=0.0)))
    merged = latents(comfy, comfy.run(all_in_one(graph, "direct")))
    assert same(via_branch, merged)
    base_only = latents(comfy, comfy.run(all_in_one(graph, "finextract", w=0.0, k=0.0)))
    assert differ(base_only, merged)


@pytest.mark.parametrize("pair", ["lora", "full"])
def test_guider_with_sampler_custom_advanced(comfy, comfy_models, pair):
    graph = loader(comfy_models, **({"loras": [(comfy_models.loras["diffusers"], 0.8)]} if pair == "lora"
                                    else {"finetuned": comfy_models.checkpoints["finetuned"]}))
    out = {m: latents(comfy, comfy.run(with_guider(graph, m))) for m in ("finextract", "cfg", "direct")}
    assert out["cfg"].shape == (2, 4, SIZE // 8, SIZE // 8)
    for a, b in (("finextract", "cfg"), ("finextract", "direct"), ("cfg", "direct")):
        assert differ(out[a], out[b]), (a, b)
