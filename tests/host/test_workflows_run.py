"""Every shipped workflow executes on a real ComfyUI through ``/prompt``: the UI file converted by
our converter, pointed at the harness's SD1.5-architecture files, with small N, steps and size.
Assertions are on the outputs: the report JSON on disk, its provenance, the figures' ranges."""
import hashlib
import pathlib
import shutil

import pytest
from PIL import Image

from finextract.workflows.convert import node_by_title, to_api
from finextract.workflows.refresh import shipped_workflows
from finextract.workflows.schema import Schemas

SD_WORKFLOWS = ("audit-my-lora", "dreambooth-pair", "baselines-side-by-side", "unknown-caption")


@pytest.fixture(scope="module")
def training_folder(comfy, workflow_prompts):
    return workflow_prompts.training_folder(comfy)


def small_prompt(workflow_prompts, name, comfy_models, training_folder):
    return workflow_prompts.small_prompt(name, training_folder, comfy_models.checkpoints["base"],
                                         comfy_models.checkpoints["finetuned"], comfy_models.loras["kohya"])


@pytest.mark.parametrize("name", SD_WORKFLOWS)
def test_workflow_runs_and_reports(comfy, comfy_models, training_folder, workflow_prompts, name):
    assert name in shipped_workflows()
    prompt = small_prompt(workflow_prompts, name, comfy_models, training_folder)
    outputs = comfy.run(prompt, timeout=900)
    found = workflow_prompts.reports(comfy, outputs, prompt)
    assert found, "no ExtractionMetrics output"
    base_sha = hashlib.sha256((comfy_models.root / "checkpoints" / comfy_models.checkpoints["base"]).read_bytes()).hexdigest()
    for title, report in found.items():
        raw = report["metrics"]["raw"]
        assert -1.0 <= raw["AS"] <= 1.0
        assert set(raw["A-ESR"]) == {"0.6", "0.7"} and all(0.0 <= v <= 1.0 for v in raw["A-ESR"].values())
        assert len(report["training_images"]) == workflow_prompts.N0
        provenance = report["provenance"]
        assert provenance["models"]["base"]["base"]["sha256"] == base_sha
        assert provenance["count"] == 4 and provenance["steps"] == 2
    saved = [o for node_id, o in outputs.items() if prompt[node_id]["class_type"] == "SaveImage"]
    assert len(saved) == len(found)
    picture = Image.open(comfy.output_dir / saved[0]["images"][0]["subfolder"] / saved[0]["images"][0]["filename"])
    assert picture.size[0] > 2 * 64  # training | extracted | score
    if name == "baselines-side-by-side":
        methods = sorted(r["provenance"]["method"] for r in found.values())
        assert methods == ["cfg", "direct", "finextract"]
        assert len({r["provenance"]["seed"] for r in found.values()}) == 1
    if name == "dreambooth-pair":
        assert next(iter(found.values()))["provenance"]["models"]["finetuned"]["finetune"]["kind"] == "checkpoint"
    if name == "unknown-caption":
        caption_node = next(k for k, v in prompt.items() if v["_meta"]["title"] == "Recovered caption")
        caption = outputs[caption_node]["text"][0]
        assert caption.strip(), "the inverter produced no caption"
        assert node_by_title(prompt, "Recovered caption, encoded")["inputs"]["text"][0] == \
            next(k for k, v in prompt.items() if v["class_type"] == "FineXtractCaptionInverter")


MINI = pathlib.Path(__file__).resolve().parents[2] / "miniature"


def test_miniature_demo_recovers_the_cli_demos_copies(comfy, workflow_prompts, tmp_path):
    """Workflow 5 as shipped (only the input folder's copy is test-side), N = 50·N0 as the CLI
    demo: through ComfyUI's own sampler (ddim, ddim_uniform) FineXtract on the bundled LoRA
    recovers the same training images as the CLI demo (our DDIM, the same seeds and guidance) —
    each training image's best score within 0.1 of the CLI's, the same AS within 0.05 — far
    above the base-model control, which matches nothing (< 0.5). (Measured 2026-12-01: AS 0.636
    against the CLI's 0.635, 4 of 5 above 0.6 in both, control 0.067; per-image scores straddle
    τ = 0.6, so the count above τ may differ.)"""
    from finextract.miniature.demo import run_demo

    needed = [MINI / "weights" / "mini_base.safetensors", MINI / "weights" / "mini_lora_cat.safetensors",
              MINI / "concepts" / "cat"]
    missing = [str(p) for p in needed if not p.exists()]
    assert not missing, f"miniature world not bundled: {missing}"
    shutil.copytree(MINI / "concepts" / "cat", comfy.input_dir / "cat", dirs_exist_ok=True)
    prompt = to_api(shipped_workflows()["miniature-demo"], Schemas.snapshot())
    outputs = comfy.run(prompt, timeout=1800)
    found = workflow_prompts.reports(comfy, outputs, prompt)
    lora = found["5. Verdict: AS and A-ESR"]["metrics"]["raw"]
    control = found["5. Verdict: AS and A-ESR (control: base model)"]["metrics"]["raw"]
    cli = run_demo(tmp_path / "cli", direct=False, control=False)["metrics"]["raw"]
    print(f"miniature demo in ComfyUI: AS {lora['AS']:.3f}, best {lora['best_score']} (control AS "
          f"{control['AS']:.3f}); CLI demo: AS {cli['AS']:.3f}, best {cli['best_score']}")
    assert max(control["best_score"]) < 0.5 and lora["AS"] > control["AS"] + 0.3
    assert abs(lora["AS"] - cli["AS"]) <= 0.05
    assert all(abs(a - b) <= 0.1 for a, b in zip(lora["best_score"], cli["best_score"])), (lora, cli)
