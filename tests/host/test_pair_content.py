"""The Dual Model Loader judges a pair by what its files hold, in a real ComfyUI over HTTP: a LoRA
that moves nothing and a base re-saved under new metadata are refused, a UNet-only fine-tune says
its text encoder is unchanged, real fine-tunes are accepted with the size of their change, and a
refusal reaches the API as its message, not as a module path.

Models: the random-weight SD1.5-architecture files of ``sd15_models.py`` (see conftest)."""
import re

import pytest


def loader(models, finetuned="none", lora=None):
    inputs = {"base_checkpoint": models.checkpoints["base"], "finetuned_checkpoint": finetuned,
              "lora_1": lora or "none", "strength_1": 1.0}
    for i in (2, 3):
        inputs[f"lora_{i}"], inputs[f"strength_{i}"] = "none", 1.0
    return {"L": {"class_type": "FineXtractDualModelLoader", "inputs": inputs},
            "R": {"class_type": "PreviewAny", "inputs": {"source": ["L", 4]}}}


def change(report: str, component: str) -> float:
    """The relative norm the report gives a component (0.0 when it says unchanged)."""
    if f"{component} unchanged" in report:
        return 0.0
    return float(re.search(rf"{component} fine-tuned \(‖ΔW‖/‖W‖ = ([0-9.e+-]+)\)", report).group(1))


def execution_error(comfy, graph) -> dict:
    """ComfyUI's raw ``execution_error`` message for a graph that fails while running."""
    entry = comfy.wait(comfy.submit(graph))
    errors = [data for kind, data in entry["status"]["messages"] if kind == "execution_error"]
    assert errors, entry["status"]
    return errors[0]


def test_lora_with_zero_up_weights_is_refused(comfy, comfy_models):
    error = comfy.run_expect_error(loader(comfy_models, lora=comfy_models.loras["zero"]))
    assert comfy_models.loras["zero"] in error and comfy_models.checkpoints["base"] in error
    assert "changes no weight" in error and "up weights are 0" in error


def test_base_resaved_with_new_metadata_is_refused(comfy, comfy_models):
    error = comfy.run_expect_error(loader(comfy_models, finetuned=comfy_models.checkpoints["resaved"]))
    assert comfy_models.checkpoints["resaved"] in error and comfy_models.checkpoints["base"] in error
    assert "same tensors" in error


def test_refusal_reaches_the_api_as_its_message_alone(comfy, comfy_models):
    error = execution_error(comfy, loader(comfy_models, finetuned=comfy_models.checkpoints["resaved"]))
    assert error["exception_type"] == "ValueError"  # not ".../custom_nodes/<pack>.nodes.pair.X"
    assert error["exception_message"].startswith(f"fine-tuned checkpoint {comfy_models.checkpoints['resaved']!r}")
    assert "custom_nodes" not in error["exception_message"]


def test_unet_only_fine_tune_reports_its_text_encoder_unchanged(comfy, comfy_models):
    """Both files lack text_projection, which ComfyUI leaves uninitialised in each load: only the
    files' own tensors may decide."""
    report = comfy.run(loader(comfy_models, finetuned=comfy_models.checkpoints["unet_finetuned"]))["R"]["text"][0]
    assert "text encoder unchanged" in report
    assert 0.02 < change(report, "UNet") < 0.06  # sd15_models.perturb: 5 % of each weight's std


def test_full_fine_tune_is_accepted_with_the_size_of_its_change(comfy, comfy_models):
    report = comfy.run(loader(comfy_models, finetuned=comfy_models.checkpoints["finetuned"]))["R"]["text"][0]
    assert "text encoder fine-tuned" in report
    for component in ("UNet", "text encoder"):
        assert 0.02 < change(report, component) < 0.06, report


@pytest.mark.parametrize("fmt", ["kohya", "diffusers", "peft"])
def test_lora_is_accepted_with_the_same_change_in_every_spelling(comfy, comfy_models, fmt):
    """One delta in three spellings (kohya alpha = rank; diffusers and PEFT carry no alpha): one
    size of change, on 4 UNet layers of the whole UNet."""
    report = comfy.run(loader(comfy_models, lora=comfy_models.loras[fmt]))["R"]["text"][0]
    assert "text encoder unchanged" in report
    kohya = comfy.run(loader(comfy_models, lora=comfy_models.loras["kohya"]))["R"]["text"][0]
    assert 1e-4 < change(report, "UNet") < 1
    assert change(report, "UNet") == pytest.approx(change(kohya, "UNet"), rel=1e-3)
