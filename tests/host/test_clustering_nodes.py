"""SSCDCluster and ExtractionMetrics in a real ComfyUI over HTTP, with the real ONNX SSCD.

Generated images are real photographs (scikit-image's bundled data) and their JPEG / crop copies,
loaded with ComfyUI's own LoadImage + ImageBatch; the LATENT path runs the pack's sampler on the
harness's random-weight SD1.5-architecture models and decodes with their VAE."""
import io
import json
import time

import numpy as np
import pytest
import torch
from PIL import Image

skdata = pytest.importorskip("skimage.data", reason="scikit-image (the test extra) ships the photos")

SIDE = 384


def _square(image: Image.Image, crop=0.0) -> Image.Image:
    w, h = image.size
    s = int(min(w, h) * (1 - crop))
    left, top = (w - s) // 2, (h - s) // 2
    return image.crop((left, top, left + s, top + s)).convert("RGB").resize((SIDE, SIDE), Image.BILINEAR)


def _jpeg(image: Image.Image) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=40)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


@pytest.fixture(scope="module")
def photo_inputs(comfy):
    """Generated set fx_gen_*.png (3 photos x 2 copies, 384 px) at the top of the input folder;
    training set fx_train/ (the originals at their own sizes, one RGBA, plus an unrelated
    greyscale photo that nothing generated resembles)."""
    photos = {"astronaut": skdata.astronaut(), "chelsea": skdata.chelsea(), "rocket": skdata.rocket()}
    generated = []
    for name, array in photos.items():
        original = Image.fromarray(array)
        generated += [(f"fx_gen_{name}_a.png", _square(original)),
                      (f"fx_gen_{name}_b.png", _jpeg(_square(original, crop=0.1)))]
    for filename, image in generated:
        image.save(comfy.input_dir / filename)
    train = comfy.input_dir / "fx_train"
    train.mkdir(exist_ok=True)
    Image.fromarray(photos["astronaut"]).save(train / "1_astronaut.png")
    Image.fromarray(photos["chelsea"]).save(train / "2_chelsea.jpg", quality=95)
    Image.fromarray(photos["rocket"]).convert("RGBA").save(train / "3_rocket.png")
    Image.fromarray(skdata.camera()).save(train / "4_camera.png")  # greyscale, unmatched
    (comfy.input_dir / "fx_empty").mkdir(exist_ok=True)
    return [f for f, _ in generated]


def image_batch(files):
    graph = {f"I{i}": {"class_type": "LoadImage", "inputs": {"image": f}} for i, f in enumerate(files)}
    last = ["I0", 0]
    for i in range(1, len(files)):
        graph[f"B{i}"] = {"class_type": "ImageBatch", "inputs": {"image1": last, "image2": [f"I{i}", 0]}}
        last = [f"B{i}", 0]
    return graph, last


def cluster_node(n0, mode="fast", **sources):
    return {"class_type": "FineXtractSSCDCluster", "inputs": {
        "n0": n0, "mode": mode, "time_cap": 30.0, "centred": False, "prefilter": False, "keep": 0,
        "chunk_size": 4, **sources}}


def metrics_node(extracted, clusters=None, folder="fx_train", taus="0.6, 0.7", prefix="fx/report"):
    inputs = {"extracted": extracted, "training_folder": folder, "taus": taus, "centred": True,
              "filename_prefix": prefix}
    if clusters is not None:
        inputs["clusters"] = clusters
    return {"class_type": "FineXtractExtractionMetrics", "inputs": inputs}


def _report(comfy, outputs, node="M"):
    text = outputs[node]["text"][0]
    short = json.loads(text)
    return short, json.loads((comfy.output_dir / short["report"]).read_text())


def test_nodes_listed_and_sscd_folder_registered(comfy, photo_inputs):
    info = comfy.object_info()
    for node in ("FineXtractSSCDCluster", "FineXtractExtractionMetrics"):
        assert info[node]["category"] == "finextract" and info[node]["description"]
        for section in ("required", "optional"):
            for spec in info[node]["input"].get(section, {}).values():
                assert spec[1].get("tooltip"), (node, spec)
    assert "FINEXTRACT_CLUSTERS" in info["FineXtractSSCDCluster"]["output"]
    assert "fx_train" in info["FineXtractExtractionMetrics"]["input"]["required"]["training_folder"][1]["options"]
    assert "sscd" in comfy.get_json("/models")


def test_image_batch_clustered_and_scored_with_report(comfy, photo_inputs):
    graph, batch = image_batch(photo_inputs)
    graph["C"] = cluster_node(3, images=batch)
    graph["M"] = metrics_node(["C", 0], ["C", 2])
    graph["S"] = {"class_type": "PreviewAny", "inputs": {"source": ["C", 1]}}
    outputs = comfy.run(graph)
    summary = json.loads(outputs["C"]["text"][0])
    assert summary["descriptor"].startswith("sscd_disc_mixup int8") and summary["sizes"] == [2, 2, 2]
    assert sorted(i // 2 for i in summary["indices"]) == [0, 1, 2]  # one image per photo
    short, report = _report(comfy, outputs)
    raw = report["metrics"]["raw"]
    assert report["training_images"] == ["fx_train/1_astronaut.png", "fx_train/2_chelsea.jpg",
                                         "fx_train/3_rocket.png", "fx_train/4_camera.png"]
    assert min(raw["best_score"][:3]) > 0.6 and raw["best_score"][3] < 0.3
    assert raw["AS"] == pytest.approx(np.mean(raw["best_score"]))
    assert raw["A-ESR"]["0.6"] == pytest.approx(0.75) and short["AS"] == raw["AS"]
    assert "centred" in report["metrics"] and report["metrics"]["centring_reference"] == "generated images"
    assert report["clustering"]["sizes"] == [2, 2, 2] and report["finextract_version"]
    assert report["descriptor"] == summary["descriptor"]
    picture = Image.open(io.BytesIO(comfy.view(outputs["M"]["images"][0])))
    assert picture.height >= 4 * 128


def test_latents_from_the_sampler_decoded_in_chunks_with_provenance(comfy, comfy_models, photo_inputs):
    graph = {
        "L": {"class_type": "FineXtractDualModelLoader", "inputs": {
            "base_checkpoint": comfy_models.checkpoints["base"], "finetuned_checkpoint": comfy_models.checkpoints["finetuned"],
            **{f"lora_{i}": "none" for i in (1, 2, 3)}, **{f"strength_{i}": 1.0 for i in (1, 2, 3)}}},
        "P": {"class_type": "CLIPTextEncode", "inputs": {"text": "a photo of sks dog", "clip": ["L", 2]}},
        "N": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["L", 5]}},
        "S": {"class_type": "FineXtractModelGuidanceSampler", "inputs": {
            "base": ["L", 0], "finetuned": ["L", 1], "positive": ["P", 0], "negative": ["N", 0],
            "count": 5, "start": 0, "batch_size": 5, "seed": 3, "steps": 2, "sampler_name": "ddim",
            "scheduler": "normal", "width": 64, "height": 64, "method": "finextract", "w": 3.0, "k": -0.02}},
        "C": cluster_node(2, mode="faithful", latent=["S", 0], vae=["L", 3]),
        "M": metrics_node(["C", 0], ["C", 2], prefix="fx/latent"),
        "V": {"class_type": "PreviewImage", "inputs": {"images": ["C", 0]}},
    }
    outputs = comfy.run(graph)
    summary = json.loads(outputs["C"]["text"][0])
    assert summary["n_generated"] == 5 and len(summary["indices"]) == 2 and summary["mode"] == "faithful"
    assert len(outputs["V"]["images"]) == 2
    _, report = _report(comfy, outputs)
    provenance = report["provenance"]
    assert provenance and json.dumps(provenance).count("sha256") >= 1
    assert report["clustering"]["parameters"]["mode"] == "faithful"
    assert report["clustering"]["n_generated"] == 5 and round(report["clustering"]["threshold"], 4) == summary["threshold"]


def test_bad_inputs_are_clear_errors(comfy, photo_inputs):
    graph, batch = image_batch(photo_inputs[:2])
    graph["C"] = cluster_node(3, images=batch)
    graph["S"] = {"class_type": "PreviewAny", "inputs": {"source": ["C", 1]}}
    assert "N0 must be between 1 and the number of generated images (2)" in comfy.run_expect_error(graph)

    graph, batch = image_batch(photo_inputs[:2])
    graph["C"] = cluster_node(1)
    graph["S"] = {"class_type": "PreviewAny", "inputs": {"source": ["C", 1]}}
    assert "connect either LATENT and VAE" in comfy.run_expect_error(graph)

    graph, batch = image_batch(photo_inputs[:1])
    graph["M"] = metrics_node(batch, folder="fx_empty")
    assert "training set is empty" in comfy.run_expect_error(graph)
    graph["M"] = metrics_node(batch, taus="0.6, high")
    assert "taus must be numbers" in comfy.run_expect_error(graph)
    graph["M"] = metrics_node(batch, folder="../..")
    assert "training_folder" in comfy.run_expect_error(graph)  # not among the combo's options


def test_damaged_training_images_are_named(comfy, photo_inputs):
    """Training images count by decoding, not by suffix: a PNG cut in half (was: ``image file is
    truncated`` with no file name) and a text file named .jpg are each named, in one message."""
    folder = comfy.input_dir / "fx_damaged"
    folder.mkdir(exist_ok=True)
    whole = (comfy.input_dir / "fx_train" / "1_astronaut.png").read_bytes()
    (folder / "cut.png").write_bytes(whole[: len(whole) // 2])
    (folder / "notes.jpg").write_text("not a picture")
    (folder / "whole.png").write_bytes(whole)
    graph, batch = image_batch(photo_inputs[:1])
    graph["M"] = metrics_node(batch, folder="fx_damaged")
    error = comfy.run_expect_error(graph)
    assert "fx_damaged/cut.png: damaged or truncated image" in error, error
    assert "fx_damaged/notes.jpg: not an image in any format PIL knows" in error, error
    assert "whole.png" not in error


def test_interrupt_stops_clustering(comfy, photo_inputs):
    graph, batch = image_batch(photo_inputs[:1])
    graph["R"] = {"class_type": "RepeatImageBatch", "inputs": {"image": batch, "amount": 400}}
    graph["C"] = cluster_node(2, images=["R", 0])
    graph["S"] = {"class_type": "PreviewAny", "inputs": {"source": ["C", 1]}}
    prompt_id = comfy.submit(graph)
    time.sleep(4)
    comfy.interrupt()
    entry = comfy.wait(prompt_id, timeout=120)
    assert comfy.error_of(entry) == "interrupted"


def test_torchscript_in_models_sscd_is_preferred(comfy, photo_inputs):
    # Meta's TorchScript weights cannot be downloaded here: a scripted stand-in with the same
    # calling convention (normalised NCHW in, 512-d out) proves the folder is searched and used.
    class Pool(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.adaptive_avg_pool2d(x, (13, 14)).flatten(1)[:, :512]

    folder = comfy.base_dir / "models" / "sscd"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "sscd_disc_mixup.torchscript.pt"
    torch.jit.script(Pool()).save(str(path))
    try:
        graph, batch = image_batch(photo_inputs)
        graph["C"] = cluster_node(3, images=batch)
        graph["S"] = {"class_type": "PreviewAny", "inputs": {"source": ["C", 1]}}
        summary = json.loads(comfy.run(graph)["C"]["text"][0])
        assert "TorchScript" in summary["descriptor"]
    finally:
        path.unlink()
