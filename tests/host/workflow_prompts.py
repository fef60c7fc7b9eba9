"""The shipped workflows as small API prompts pointed at test model files, and the reports they
write: shared by ``test_workflows_run`` (the SD1.5-architecture files) and ``test_families`` (each
family's). Loaded by conftest (fixture ``workflow_prompts``)."""
from __future__ import annotations

import json

import numpy as np
from PIL import Image

from finextract.workflows.convert import to_api
from finextract.workflows.refresh import shipped_workflows
from finextract.workflows.schema import Schemas

N0 = 2
"""Training images in the test folder (and clusters asked for)."""


def training_folder(comfy) -> str:
    """N0 random 64-px PNGs in ComfyUI's input folder; returns the folder's name there."""
    folder = comfy.input_dir / "finextract-train"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for i in range(N0):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(folder / f"t{i}.png")
    return folder.name


def small_prompt(name: str, training: str, base: str, finetuned: str | None = None, lora: str | None = None) -> dict:
    """The workflow's API twin, its loader pointed at ``base`` and, where the workflow pairs with a
    checkpoint or a LoRA, at ``finetuned`` / ``lora``; N = 4, 2 steps, 64 px."""
    prompt = to_api(shipped_workflows()[name], Schemas.snapshot())
    for node in prompt.values():
        inputs, kind = node["inputs"], node["class_type"]
        if kind == "FineXtractDualModelLoader":
            inputs["base_checkpoint"] = base
            if inputs["finetuned_checkpoint"] != "none":
                inputs["finetuned_checkpoint"] = finetuned
            if inputs["lora_1"] != "none":
                inputs["lora_1"] = lora
        elif kind == "FineXtractModelGuidanceSampler":
            inputs.update(count=4, batch_size=2, steps=2, width=64, height=64)
        elif kind == "FineXtractSSCDCluster":
            inputs["n0"] = N0
        elif kind == "FineXtractExtractionMetrics":
            inputs["training_folder"] = training
        elif kind == "FineXtractCaptionInverter":
            inputs.update(method="pez", iterations=3, length=3)
    return prompt


def reports(comfy, outputs, prompt) -> dict:
    """The JSON report each ExtractionMetrics node wrote, by node title."""
    found = {}
    for node_id, node in prompt.items():
        if node["class_type"] == "FineXtractExtractionMetrics":
            short = json.loads(outputs[node_id]["text"][0])
            found[node["_meta"]["title"]] = json.loads((comfy.output_dir / short["report"]).read_text())
    return found
