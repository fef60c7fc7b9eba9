"""The shipped FLUX.1-dev workflow, ``audit-flux-lora``, executes over ``/prompt`` on the shrunk
random-weight FLUX.1-dev of ``family_models.py`` (1 double + 1 single block, every key FLUX.1's;
ComfyUI detects it as ``Flux``) and its kohya LoRA, in the split layout ComfyUI's own FLUX.1 dev
template loads (``flux_dev_full_text_to_image``): the diffusion model alone from
``diffusion_models/`` with BFL's bare keys (through the Dual Model Loader), text encoders from a
DualCLIPLoader, the VAE from a VAELoader of the FLUX VAE file (bare keys, as BFL's
``ae.safetensors``): sampled with the workflow's flow sampler, decoded by that 16-channel VAE,
clustered, scored; and the workflow's one distilled guidance value reaches the guider on the
caption *and* on the empty prompt.

The one fake: the workflow's DualCLIPLoader loads CLIP-L and T5-XXL. T5-XXL (4.7 G parameters)
cannot exist here, so the test FLUX's ``txt_in`` is 768 wide and the test replaces that node by a
stock ``CLIPLoader`` of the builder's real-size CLIP-L file (type ``stable_diffusion``: ComfyUI's
CLIPLoader has no FLUX type for CLIP-L alone; ``test_families`` feeds FLUX the same way), keeping
its links to both prompts. Everything else is the workflow as shipped, its file names pointed at
the test's files, with N, steps and size made small (``workflow_prompts.small_prompt``).

Why latents: ComfyUI gives a FLUX conditioning guidance 3.5 when it has no FluxGuidance
(``model_base.Flux.extra_conds``), the workflow's default too, so at 3.5 a missing FluxGuidance
changes nothing. At another value, leaving a prompt's FluxGuidance out must change the sampled
latents (read back through a ``SaveLatent`` the test adds on the sampler's output), for the
caption and for the empty prompt; at 3.5 leaving both out must change nothing."""
import hashlib

import pytest
import torch
from PIL import Image
from safetensors.torch import load

WORKFLOW = "audit-flux-lora"
SPLIT = "diffusion_models/"
"""How the Dual Model Loader lists a file of ComfyUI's diffusion_models folder."""


@pytest.fixture(scope="module")
def flux(family_comfy, family_models, tmp_path_factory):
    """One ComfyUI for the module: the FLUX pair loads once and stays cached between prompts."""
    with family_comfy(tmp_path_factory.mktemp("comfy-flux-workflow")) as comfy:
        yield comfy, family_models


def flux_prompt(comfy, family_models, workflow_prompts) -> dict:
    """The shipped workflow's API prompt on the split FLUX base (diffusion model only) + kohya
    LoRA and the FLUX VAE file, small, its DualCLIPLoader replaced by a CLIPLoader of the test's
    CLIP-L."""
    folder, manifest = family_models
    entry = manifest["flux"]
    assert entry["family"] == "Flux"  # ComfyUI's model_detection, when the file was built
    prompt = workflow_prompts.small_prompt(WORKFLOW, workflow_prompts.training_folder(comfy),
                                           SPLIT + entry["diffusion_models"]["base"], lora=entry["loras"]["kohya"])
    clip_id = node_of(prompt, "DualCLIPLoader")
    encoders = prompt[clip_id]
    assert encoders["inputs"]["type"] == "flux", encoders  # T5-XXL + CLIP-L, as ComfyUI's FLUX template
    prompts = [node["inputs"]["clip"] for node in prompt.values() if node["class_type"] == "CLIPTextEncode"]
    assert prompts == [[clip_id, 0]] * 2, prompts  # caption and empty prompt both through it
    encoders.update(class_type="CLIPLoader", inputs={"clip_name": entry["clip"], "type": "stable_diffusion"},
                    _meta={"title": "test: CLIP-L in place of T5-XXL + CLIP-L"})
    prompt[node_of(prompt, "VAELoader")]["inputs"]["vae_name"] = entry["vae"]
    return prompt


def node_of(prompt: dict, class_type: str) -> str:
    (node_id,) = [k for k, v in prompt.items() if v["class_type"] == class_type]
    return node_id


def test_audit_flux_lora_runs_and_reports(flux, workflow_prompts):
    comfy, family_models = flux
    folder, manifest = family_models
    entry = manifest["flux"]
    prompt = flux_prompt(comfy, family_models, workflow_prompts)
    outputs = comfy.run(prompt, timeout=900)
    (report,) = workflow_prompts.reports(comfy, outputs, prompt).values()

    raw = report["metrics"]["raw"]
    assert -1.0 <= raw["AS"] <= 1.0, raw
    assert set(raw["A-ESR"]) == {"0.6", "0.7"} and all(0.0 <= v <= 1.0 for v in raw["A-ESR"].values()), raw
    assert len(report["training_images"]) == len(raw["best_score"]) == workflow_prompts.N0, report

    provenance = report["provenance"]
    unet = entry["diffusion_models"]["base"]
    base_sha = hashlib.sha256((folder / "diffusion_models" / unet).read_bytes()).hexdigest()
    models = provenance["models"]
    assert models["base"]["family"] == "Flux" and models["base"]["base"]["sha256"] == base_sha, models["base"]
    assert (models["base"]["base"]["file"], models["base"]["base"]["folder"]) == (SPLIT + unet, "diffusion_models")
    (lora,) = models["finetuned"]["finetune"]["loras"]
    assert lora["file"] == entry["loras"]["kohya"] and lora["tensors_applied"] == lora["tensors_total"] > 0, lora
    sampler = prompt[node_of(prompt, "FineXtractModelGuidanceSampler")]["inputs"]
    assert (provenance["count"], provenance["steps"]) == (sampler["count"], sampler["steps"]) == (4, 2), provenance
    # the workflow's FLUX settings reached the sampler as shipped (small_prompt changes none of them)
    assert (provenance["sampler"], provenance["scheduler"], provenance["method"]) == ("euler", "simple", "finextract")
    assert (provenance["w"], provenance["k"]) == (3.0, -0.02), provenance
    assert provenance["latent_shape"] == [16, 8, 8], provenance  # FLUX's 16-channel latent, 64 px

    clusters = report["clustering"]
    assert clusters["n_generated"] == 4 and clusters["n0"] == workflow_prompts.N0, clusters

    (saved,) = [o for node_id, o in outputs.items() if prompt[node_id]["class_type"] == "SaveImage"]
    picture = Image.open(comfy.output_dir / saved["images"][0]["subfolder"] / saved["images"][0]["filename"])
    assert picture.size[0] > 2 * 64, picture.size  # training | extracted | score


def sampler_only(prompt: dict) -> dict:
    """The nodes the sampler depends on, the sampler, and a SaveLatent of its N latents."""
    sampler = node_of(prompt, "FineXtractModelGuidanceSampler")
    keep, todo = set(), [sampler]
    while todo:
        node_id = todo.pop()
        if node_id not in keep:
            keep.add(node_id)
            todo += [v[0] for v in prompt[node_id]["inputs"].values() if isinstance(v, list)]
    graph = {k: v for k, v in prompt.items() if k in keep}
    graph["latents"] = {"class_type": "SaveLatent", "inputs": {"samples": [sampler, 0], "filename_prefix": "fx_flux_wf"}}
    return graph


def guidance_source(graph: dict, prompt_input: str) -> str:
    """The FluxGuidance node on the sampler's ``positive`` / ``negative`` input (fails if none)."""
    source = graph[node_of(graph, "FineXtractModelGuidanceSampler")]["inputs"][prompt_input][0]
    assert graph[source]["class_type"] == "FluxGuidance", \
        f"the sampler's {prompt_input} prompt does not come through FluxGuidance: {graph[source]}"
    return source


def without_guidance(graph: dict, *prompt_inputs: str) -> dict:
    """``graph`` with the FluxGuidance of the named sampler inputs left out (their encoded prompt
    wired straight to the sampler)."""
    graph = {k: {**v, "inputs": dict(v["inputs"])} for k, v in graph.items()}
    sampler = graph[node_of(graph, "FineXtractModelGuidanceSampler")]
    for name in prompt_inputs:
        source = guidance_source(graph, name)
        sampler["inputs"][name] = graph.pop(source)["inputs"]["conditioning"]
    return graph


def at_guidance(graph: dict, value: float) -> dict:
    """``graph`` with the workflow's one distilled-guidance value set to ``value``."""
    graph = {k: {**v, "inputs": dict(v["inputs"])} for k, v in graph.items()}
    graph[node_of(graph, "PrimitiveFloat")]["inputs"]["value"] = value
    return graph


def latents(comfy, graph: dict) -> torch.Tensor:
    saved = comfy.run(graph, timeout=900)["latents"]["latents"][0]
    return load(comfy.view(saved))["latent_tensor"].float()


def test_the_distilled_guidance_value_reaches_both_prompts(flux, workflow_prompts, guidance_graphs):
    comfy, family_models = flux
    g = guidance_graphs
    graph = sampler_only(flux_prompt(comfy, family_models, workflow_prompts))
    for name in ("positive", "negative"):  # one value for both prompts, as docs/guidance.md asks
        source = graph[guidance_source(graph, name)]["inputs"]["guidance"]
        assert isinstance(source, list) and graph[source[0]]["class_type"] == "PrimitiveFloat", \
            f"the {name} prompt's FluxGuidance does not take the workflow's one guidance value: {source}"
    shipped = latents(comfy, graph)
    assert shipped.shape == (4, 16, 8, 8), shipped.shape  # N = 4 as set, FLUX's 16 channels
    g.assert_close(latents(comfy, without_guidance(graph, "positive", "negative")), shipped,
                   "at 3.5 (as shipped) both prompts as without FluxGuidance (ComfyUI's default 3.5)", rtol=1e-6)
    other = at_guidance(graph, 1.5)
    moved = latents(comfy, other)
    g.assert_far(moved, shipped, "the guidance value changes the samples")
    g.assert_far(latents(comfy, without_guidance(other, "positive")), moved,
                 "the caption's FluxGuidance reaches the guider")
    g.assert_far(latents(comfy, without_guidance(other, "negative")), moved,
                 "the empty prompt's FluxGuidance reaches the guider")
