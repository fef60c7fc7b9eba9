"""The harness itself: the built checkpoint is an SD1.5 model to ComfyUI, and a stock graph
samples with it over HTTP."""
import io

import numpy as np
from PIL import Image


def test_built_checkpoint_samples_in_stock_graph(comfy, comfy_models, stock_txt2img):
    assert comfy_models.families["base"] == "SD15"
    assert comfy_models.families["other_family"] != "SD15"
    graph = stock_txt2img(comfy_models.checkpoints["base"], "a photo", 64, 1, 2, "euler", "harness")
    outputs = comfy.run(graph)
    image = Image.open(io.BytesIO(comfy.view(outputs["7"]["images"][0])))
    pixels = np.asarray(image)
    assert image.size == (64, 64)
    assert pixels.std() > 0  # random weights still give a non-constant image
