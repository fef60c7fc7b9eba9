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
- a LoRA of another family, or of a family the pack does not handle, and a base of such a family
  are refused saying so.

FLUX's text: T5-XXL cannot exist here, so the prompt goes through a real-size CLIP-L (stock
CLIPLoader) into a FLUX whose ``txt_in`` is 768 wide; both conditionings carry FluxGuidance 3.5
(the distilled guidance value; docs/guidance.md says why the empty prompt takes it too).

Cost: tests run grouped by (family, pair kind), each group on a ComfyUI of its own, so each
group loads its pair about once, and ComfyUI's models are freed before other files load (an SDXL
pair with its 818 M-parameter text encoders is ~3.5 GB in ComfyUI). Measured time and memory:
README, "Model families"."""
import re
import types

import pytest
import torch

FAMILIES = {
    # ComfyUI family and ModelType (model_base logs it), parameterisation, latent_formats (scale,
    # shift), latent channels, sigmas, empty-latent node
    "sdxl": dict(family="SDXL", model_type="EPS", flow=False, scale=0.13025, shift=0.0, channels=4,
                 sigmas=(14.6, 1.5), empty="EmptyLatentImage"),
    "sdxl_v": dict(family="SDXL", model_type="V_PREDICTION", flow=False, scale=0.13025, shift=0.0, channels=4,
                   sigmas=(14.6, 1.5), empty="EmptyLatentImage"),
    "flux": dict(family="Flux", model_type="FLUX", flow=True, scale=0.3611, shift=0.1159, channels=16,
                 sigmas=(0.9, 0.3), empty="EmptySD3LatentImage"),
    "sd3": dict(family="SD3", model_type="FLOW", flow=True, scale=1.5305, shift=0.0609, channels=16,
                sigmas=(0.9, 0.3), empty="EmptySD3LatentImage"),
}
LORA_GROUPS = ["sdxl-lora", "sdxl_v-lora", "flux-lora", "sd3-lora"]
FULL_GROUPS = ["sdxl-full", "flux-full", "sd3-full"]
SIZE = 64


class FreeingClient:
    """A group's ComfyClient, freeing ComfyUI's models whenever a graph's Dual Model Loader is
    another node or names other files than the last run's (``ComfyClient.free``: ComfyUI would hold
    both pairs while loading the new one)."""

    def __init__(self, comfy):
        self.comfy, self.loaded = comfy, None

    def run(self, graph, **kwargs):
        loaders = [(k, v["inputs"]) for k, v in graph.items() if v["class_type"] == "FineXtractDualModelLoader"]
        if loaders and loaders != self.loaded:
            if self.loaded is not None:
                self.comfy.free()
            self.loaded = loaders
        return self.comfy.run(graph, **kwargs)

    def __getattr__(self, name):  # input_dir, view, run_expect_error (a refused load loads nothing)
        return getattr(self.comfy, name)


@pytest.fixture(scope="module")
def group(request, family_comfy, family_models, tmp_path_factory):
    """One (family, pair kind) on a ComfyUI of its own: the group's tests run one after another,
    so its pair loads about once, and the next group starts from a fresh process."""
    fam, pair = request.param.split("-")
    with family_comfy(tmp_path_factory.mktemp(f"comfy-{fam}-{pair}")) as comfy:
        yield types.SimpleNamespace(fam=fam, pair=pair, spec=FAMILIES[fam], manifest=family_models[1],
                                    comfy=FreeingClient(comfy))


def groups(ids):
    return pytest.mark.parametrize("group", ids, indirect=True, scope="module")


def loader(group, pair=None, lora="peft"):
    entry = group.manifest[group.fam]
    inputs = {"base_checkpoint": entry["checkpoints"]["base"], "finetuned_checkpoint": "none"}
    for i in range(1, 4):
        inputs[f"lora_{i}"], inputs[f"strength_{i}"] = "none", 1.0
    if (pair or group.pair) == "full":
        inputs["finetuned_checkpoint"] = entry["checkpoints"]["finetuned"]
    else:
        inputs["lora_1"] = lora if lora.endswith(".safetensors") else entry["loras"][lora]
    return {"L": {"class_type": "FineXtractDualModelLoader", "inputs": inputs}}


def pair_graph(group, lora="peft"):  # lora: ignored by a full group
    """Loader, caption P (fine-tuned text encoder) and empty prompt N (base text encoder)."""
    graph = loader(group, lora=lora)
    flux = group.fam == "flux"
    if flux:  # no text encoder in the file: CLIP-L beside it, FluxGuidance on both prompts
        graph["C"] = {"class_type": "CLIPLoader", "inputs": {"clip_name": group.manifest["flux"]["clip"],
                                                             "type": "stable_diffusion"}}
        clips = (["C", 0], ["C", 0])
    else:
        clips = (["L", 2], ["L", 5])
    for node, text, clip in (("P", "a photo of sks dog", clips[0]), ("N", "", clips[1])):
        encoded = node + "0" if flux else node
        graph[encoded] = {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": clip}}
        if flux:
            graph[node] = {"class_type": "FluxGuidance", "inputs": {"conditioning": [encoded, 0], "guidance": 3.5}}
    return graph


def with_report(graph) -> dict:
    """The graph with an output node showing the loader's report (ComfyUI runs only graphs with one)."""
    return {**graph, "R": {"class_type": "PreviewAny", "inputs": {"source": ["L", 4]}}}


def report(group, graph) -> str:
    return group.comfy.run(with_report(graph))["R"]["text"][0]


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


@groups(LORA_GROUPS)
def test_loader_detects_the_family_and_applies_every_lora_spelling(group):
    expected = group.spec["family"]
    assert group.manifest[group.fam]["family"] == expected  # ComfyUI's model_detection, at build time
    for fmt in ("kohya", "peft"):  # peft last: the pair the group's next tests load stays loaded
        text = report(group, loader(group, lora=fmt))
        assert f"({expected}, sha256" in text, text
        applied, total = map(int, re.search(r"x1: (\d+)/(\d+) tensors applied", text).groups())
        assert applied == total > 0, f"{fmt}: {text}"
        assert "UNet fine-tuned" in text, text
        if group.fam.startswith("sdxl"):  # lora_te1_/lora_te2_, text_encoder./text_encoder_2.
            assert "2 text-encoder layers" in text and "text encoder fine-tuned" in text, text
    assert_model_type(group)


@groups(FULL_GROUPS)
def test_loader_pairs_a_full_fine_tune(group):
    text = report(group, loader(group))
    assert f"({group.spec['family']}, sha256" in text and "fine-tune: full checkpoint" in text, text
    assert "UNet fine-tuned" in text, text
    if group.fam == "sdxl":  # the builder moved the UNet only (the usual SDXL DreamBooth)
        assert "text encoder unchanged" in text, text
    assert_model_type(group)


def assert_model_type(group):
    """ComfyUI built every model of the group with the family's parameterisation (the v-prediction
    group is v: its file's ``v_pred`` key was read), as its log says."""
    types_logged = set(re.findall(r"^model_type (\w+)$", group.comfy.log(), re.M))
    assert types_logged == {group.spec["model_type"]}, types_logged


@groups(LORA_GROUPS + FULL_GROUPS)
def test_eq13_equals_the_papers_eps_formula(group, guidance_graphs):
    g, spec, w, k = guidance_graphs, group.spec, 3.0, -0.3
    graph = pair_graph(group)
    gen = torch.Generator().manual_seed(5)
    for sigma in spec["sigmas"]:
        spread = 1.0 if spec["flow"] else (1 + sigma ** 2) ** 0.5
        x = from_model(torch.randn(1, spec["channels"], SIZE // 8, SIZE // 8, generator=gen) * spread, spec)
        name = g.write_latent(group.comfy, f"fx-{group.fam}-{sigma}.latent", x)
        guided = g.denoised_at(group.comfy, graph, g.ours("finextract", w, k), name, sigma)
        d_ft = g.denoised_at(group.comfy, graph, g.basic(("L", 1), "P"), name, sigma)
        d_base = g.denoised_at(group.comfy, graph, g.basic(("L", 0), "N"), name, sigma)
        g.assert_close(guided, eq13_from_the_paper(spec, x, d_ft, d_base, sigma, w, k),
                       f"Eq. 13, {group.fam} {group.pair} pair, sigma {sigma}")
        g.assert_far(guided, eq13_from_the_paper(spec, x, d_ft, d_base, sigma, w, k, with_k=False),
                     f"the k term is visible at sigma {sigma}", rtol=1e-3)


@groups(LORA_GROUPS)
def test_cfg_equals_comfyuis_cfg_guider(group, guidance_graphs):
    g, empty = guidance_graphs, group.spec["empty"]
    graph = pair_graph(group)
    mine = g.sampled(group.comfy, graph, g.ours("cfg", 4.0, -0.02), steps=2, empty=empty)
    stock = g.sampled(group.comfy, graph, g.stock_cfg(("L", 1), 4.0), steps=2, empty=empty)
    g.assert_close(mine, stock, f"cfg vs CFGGuider ({group.fam})", rtol=1e-5)


W1K0_LORAS = {"sdxl": ["peft"], "sdxl_v": ["kohya"], "flux": ["peft", "kohya"], "sd3": ["peft"]}


@groups(LORA_GROUPS + FULL_GROUPS)
def test_finextract_at_w1_k0_is_the_fine_tuned_model(group, guidance_graphs):
    """The masked LoRA branch on the base's weights equals ComfyUI's merged fine-tuned model (FLUX's
    and SD3's diffusers LoRAs patch slices of fused qkv / linear1 weights, kohya's whole ones);
    with a full fine-tune, the guider's batch of two models equals the fine-tuned model alone."""
    g, empty = guidance_graphs, group.spec["empty"]
    for lora in W1K0_LORAS[group.fam] if group.pair == "lora" else ["full"]:
        graph = pair_graph(group, lora=lora)
        mine = g.sampled(group.comfy, graph, g.ours("finextract", 1.0, 0.0), steps=2, empty=empty)
        unguided = g.sampled(group.comfy, graph, g.basic(("L", 1), "P"), steps=2, empty=empty)
        g.assert_close(mine, unguided, f"finextract w'=1 k=0 vs the fine-tuned model ({group.fam}, {lora})")
        base = g.sampled(group.comfy, graph, g.basic(("L", 0), "P"), steps=2, empty=empty)
        g.assert_far(unguided, base, f"the fine-tune differs from its base ({lora})")


@groups(["sdxl-lora"])
def test_sdxl_lora_spellings_give_the_same_samples(group, guidance_graphs):
    """One delta in kohya (alpha = rank) and PEFT spelling, UNet and both text encoders."""
    g = guidance_graphs
    out = {fmt: g.sampled(group.comfy, pair_graph(group, lora=fmt), g.ours("finextract", 3.0, -0.02), steps=2)
           for fmt in ("peft", "kohya")}
    g.assert_close(out["peft"], out["kohya"], "PEFT vs kohya", rtol=1e-5)


@groups(["sd3-lora"])
def test_lora_of_another_family_is_refused_naming_it(group):
    error = group.comfy.run_expect_error(with_report(loader(group, lora=group.manifest["flux"]["loras"]["kohya"])))
    assert "does not fit base checkpoint" in error and "(SD3)" in error, error
    assert "spelled as for a FLUX LoRA" in error and "load it with a FLUX base" in error, error


@groups(["sd3-lora"])
def test_lora_of_a_family_the_pack_does_not_handle_is_refused_saying_so(group):
    error = group.comfy.run_expect_error(with_report(loader(group, lora=group.manifest["unhandled_lora"])))
    assert group.manifest["unhandled_lora"] in error
    assert "spelled as for a Qwen-Image LoRA" in error and "a family this pack does not handle" in error, error


@groups(["sd3-lora"])
def test_base_of_a_family_the_pack_does_not_handle_is_refused_saying_so(group):
    base = group.manifest["unhandled_base"]
    assert base["family"] == "SD15_instructpix2pix"  # ComfyUI's model_detection, at build time
    graph = loader(group)
    graph["L"]["inputs"]["base_checkpoint"] = base["file"]
    error = group.comfy.run_expect_error(with_report(graph))
    assert base["file"] in error and "is a SD15_instructpix2pix model" in error, error
    assert "a family this pack does not handle" in error and "Handled: SD1.x, SD2.x, SDXL, SD3, FLUX" in error, error


@groups(["sdxl-lora"])
def test_audit_my_lora_workflow_runs_on_sdxl(group, workflow_prompts):
    """The shipped workflow as a creator runs it (small N, steps and size), on the SDXL base and a
    kohya LoRA (UNet, CLIP-L and CLIP-G): sampled, decoded by the checkpoint's 4-channel VAE,
    clustered, scored, its report's provenance naming the family."""
    w, entry = workflow_prompts, group.manifest["sdxl"]
    prompt = w.small_prompt("audit-my-lora", w.training_folder(group.comfy), entry["checkpoints"]["base"],
                            lora=entry["loras"]["kohya"])
    outputs = group.comfy.run(prompt, timeout=900)
    (report,) = w.reports(group.comfy, outputs, prompt).values()
    provenance = report["provenance"]
    assert provenance["models"]["base"]["family"] == "SDXL" and provenance["count"] == 4, provenance
    assert provenance["models"]["finetuned"]["finetune"]["loras"][0]["file"] == entry["loras"]["kohya"]
    assert -1.0 <= report["metrics"]["raw"]["AS"] <= 1.0 and len(report["training_images"]) == w.N0
