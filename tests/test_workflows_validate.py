"""Workflow validation and UI → API conversion against the committed node-schema snapshot
(no ComfyUI needed). The snapshot itself is checked against a live ComfyUI by the host test
``tests/host/test_workflow_schema.py``."""
import copy
import importlib.util
import json
import pathlib

import pytest

from ui_builder import UIBuilder
from finextract.workflows.convert import WorkflowError, node_by_title, to_api
from finextract.workflows.refresh import shipped_workflows
from finextract.workflows.schema import Schemas
from finextract.workflows.validate import validate

SCHEMAS = Schemas.snapshot()


def txt2img():
    """A five-node text-to-image graph built from the snapshot."""
    b = UIBuilder(SCHEMAS)
    ckpt = b.add("CheckpointLoaderSimple", title="Base model", ckpt_name="base.safetensors")
    pos = b.add("CLIPTextEncode", text="a photo of sks dog", clip=(ckpt, "CLIP"))
    neg = b.add("CLIPTextEncode", text="", clip=(ckpt, 1))
    latent = b.add("EmptyLatentImage", width=128, height=128, batch_size=2)
    sampler = b.add("KSampler", title="Sampler", model=(ckpt, "MODEL"), positive=(pos, 0),
                    negative=(neg, 0), latent_image=(latent, 0), seed=7, steps=4)
    image = b.add("VAEDecode", samples=(sampler, 0), vae=(ckpt, "VAE"))
    b.add("SaveImage", images=(image, 0), filename_prefix="t")
    b.note("Read me first")
    return b.workflow()


def node(wf, node_type):
    return next(n for n in wf["nodes"] if n["type"] == node_type)


def link_into(wf, node_type, input_name):
    socket = next(i for i in node(wf, node_type)["inputs"] if i["name"] == input_name)
    return next(link for link in wf["links"] if link[0] == socket["link"])


def test_sound_workflow_validates_and_converts():
    wf = txt2img()
    assert validate(wf, SCHEMAS) == []
    api = to_api(wf, SCHEMAS)
    assert len(api) == 7  # the note is frontend-only
    sampler = node_by_title(api, "Sampler")
    # seed carries its control-after-generate companion in the UI file, not in the prompt
    assert node(wf, "KSampler")["widgets_values"][:2] == [7, "fixed"]
    assert sampler["inputs"] == {"seed": 7, "steps": 4, "cfg": 8.0, "sampler_name": "euler",
                                 "scheduler": "simple", "denoise": 1.0, "model": ["1", 0],
                                 "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0]}
    with pytest.raises(KeyError, match="2 nodes titled 'CLIPTextEncode'"):
        node_by_title(api, "CLIPTextEncode")


@pytest.mark.parametrize("mutate, expected", [
    (lambda wf: node(wf, "KSampler")["widgets_values"].pop(1), "6 widget values for 7 widgets"),
    (lambda wf: node(wf, "KSampler")["widgets_values"].__setitem__(0, -1), "seed: -1 outside"),
    (lambda wf: node(wf, "KSampler")["widgets_values"].__setitem__(2, 2.5), "steps: 2.5 is not an integer"),
    (lambda wf: node(wf, "KSampler")["widgets_values"].__setitem__(1, "sometimes"), "control value 'sometimes'"),
    (lambda wf: node(wf, "KSampler")["widgets_values"].__setitem__(4, "euler_z"), "sampler_name: 'euler_z' is not one of"),
    (lambda wf: node(wf, "KSampler")["widgets_values"].__setitem__(3, "8"), "cfg: '8' is not a finite number"),
    (lambda wf: node(wf, "CheckpointLoaderSimple").__setitem__("type", "CheckpointLoaderFancy"),
     "unknown node type 'CheckpointLoaderFancy'"),
    (lambda wf: link_into(wf, "KSampler", "model").__setitem__(5, "CLIP"), "carries CLIP, but"),
    (lambda wf: link_into(wf, "KSampler", "model").__setitem__(2, 1), "CLIP into node 5 (KSampler, 'Sampler') input 'model'"),
    (lambda wf: node(wf, "VAEDecode")["inputs"][1].__setitem__("link", None), "required input 'vae' is not connected"),
    (lambda wf: node(wf, "SaveImage").__setitem__("mode", 4), "bypassed"),
])
def test_broken_workflows_are_reported(mutate, expected):
    wf = txt2img()
    mutate(wf)
    errors = validate(wf, SCHEMAS)
    assert any(expected in e for e in errors), errors
    with pytest.raises(WorkflowError, match="does not fit"):
        to_api(wf, SCHEMAS)


def test_upload_combo_saves_button_value_and_dynamic_files():
    b = UIBuilder(SCHEMAS)
    load = b.add("LoadImage", image="training/cat 1.png")
    b.add("PreviewImage", images=(load, "IMAGE"))
    wf = b.workflow()
    assert node(wf, "LoadImage")["widgets_values"] == ["training/cat 1.png", "image"]
    assert to_api(wf, SCHEMAS)["1"]["inputs"] == {"image": "training/cat 1.png"}


def test_linked_widget_input_takes_the_link():
    b = UIBuilder(SCHEMAS)
    ckpt = b.add("CheckpointLoaderSimple", ckpt_name="a.safetensors")
    sched = b.add("BasicScheduler", model=(ckpt, 0), steps=3)
    noise = b.add("RandomNoise", noise_seed=11)
    wf = b.workflow()
    assert node(wf, "RandomNoise")["widgets_values"] == [11, "fixed"]
    api = to_api(wf, SCHEMAS)
    assert api[str(sched)]["inputs"] == {"model": ["1", 0], "scheduler": "simple", "steps": 3, "denoise": 1.0}
    assert api[str(noise)]["inputs"] == {"noise_seed": 11}


def _frontend_saved_default():
    spec = importlib.util.find_spec("comfyui_workflow_templates_media_image")
    if spec is None:
        pytest.skip("comfyui-workflow-templates not installed (ships workflows saved by the real frontend)")
    return json.loads((pathlib.Path(spec.origin).parent / "templates" / "default.json").read_text())


def test_a_workflow_saved_by_the_real_frontend_converts_like_the_frontend():
    """ComfyUI's own default template, saved by comfyui-frontend: seed + 'randomize', markdown
    notes, widget inputs without sockets."""
    wf = _frontend_saved_default()
    assert validate(wf, SCHEMAS) == []
    api = to_api(wf, SCHEMAS)
    assert {n["class_type"] for n in api.values()} == {
        "CheckpointLoaderSimple", "KSampler", "VAEDecode", "SaveImage", "CLIPTextEncode", "EmptyLatentImage"}
    sampler = next(n for n in api.values() if n["class_type"] == "KSampler")
    assert sampler["inputs"]["seed"] == node(wf, "KSampler")["widgets_values"][0]
    assert sampler["inputs"]["steps"] == 20 and sampler["inputs"]["scheduler"] == "normal"
    broken = copy.deepcopy(wf)
    node(broken, "KSampler")["widgets_values"].remove("randomize")
    assert validate(broken, SCHEMAS)


@pytest.mark.parametrize("name", sorted(shipped_workflows()))
def test_shipped_workflow_is_sound(name):
    wf = shipped_workflows()[name]
    assert wf.get("version") == 0.4
    assert validate(wf, SCHEMAS) == []
    api = to_api(wf, SCHEMAS)
    assert api, "a workflow with no executable node"
    notes = [n for n in wf["nodes"] if n["type"] in ("Note", "MarkdownNote")]
    assert notes, "shipped workflows explain their steps in Note nodes"
    assert all(n.get("title") for n in wf["nodes"] if n["type"] not in ("Note", "MarkdownNote"))


def test_frontend_extension_widgets_are_positions_without_inputs():
    """PreviewAny gets three widgets from a frontend extension, none of them an input."""
    b = UIBuilder(SCHEMAS)
    ckpt = b.add("CheckpointLoaderSimple", ckpt_name="a.safetensors")
    text = b.add("CLIPTextEncode", text="x", clip=(ckpt, 1))
    preview = b.add("PreviewAny", source=(text, 0))
    wf = b.workflow()
    assert node(wf, "PreviewAny")["widgets_values"] == [None, None, None]
    assert to_api(wf, SCHEMAS)[str(preview)]["inputs"] == {"source": ["2", 0]}
    node(wf, "PreviewAny")["widgets_values"][0] = "stale text"
    assert any("frontend widget holds 'stale text'" in e for e in validate(wf, SCHEMAS))
