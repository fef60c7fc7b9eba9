"""The miniature world's shipped files (``miniature/weights``) in ComfyUI's checkpoint and LoRA
lists, so the miniature-demo workflow runs on a fresh ComfyUI with nothing downloaded or copied
into ``models/``. (The folder holds both kinds; each list shows all of its files.)"""
from __future__ import annotations

import pathlib

import folder_paths

WEIGHTS = pathlib.Path(__file__).resolve().parent.parent / "miniature" / "weights"


def register_bundled_weights() -> None:
    if WEIGHTS.is_dir():
        for folder in ("checkpoints", "loras"):
            if str(WEIGHTS) not in folder_paths.get_folder_paths(folder):
                folder_paths.add_model_folder_path(folder, str(WEIGHTS))
