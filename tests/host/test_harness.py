"""The harness itself: the built checkpoint is an SD1.5 model to ComfyUI, and a stock graph
samples with it over HTTP."""
import io

import numpy as np
from PIL import Image


def test_built_checkpoint_samples_in_stock_graph(comfy, comfy_models):
    assert comfy_models.families["base"] == "SD15"
    assert comfy_models.families["other_family"] != "SD15"
    graph = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": comfy_models.checkpoints["base"]}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a photo", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0],
            "seed": 0, "steps": 2, "cfg": 3.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "harness"}},
    }
    outputs = comfy.run(graph)
    image = Image.open(io.BytesIO(comfy.view(outputs["7"]["images"][0])))
    pixels = np.asarray(image)
    assert image.size == (64, 64)
    assert pixels.std() > 0  # random weights still give a non-constant image
