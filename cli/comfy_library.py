"""ComfyUI as a library: the pack's nodes run in this process, without a server or a browser.

The batch audit must run *the same nodes* as the workflows (so a report from the CLI and one
from the canvas mean the same thing) while loading models from arbitrary paths and printing
progress on the terminal. This module puts a ComfyUI checkout on ``sys.path`` (only when the
CLI asks; importing the pack never does), selects the CPU when asked, makes given files visible
to the loaders' combos, loads the pack the way ComfyUI does (``comfy_entrypoint`` →
``get_node_list``) and calls the nodes' ``execute``.
"""
from __future__ import annotations

import asyncio
import pathlib
import sys
import time

import torch


class ComfyLibrary:
    def __init__(self, comfyui: pathlib.Path, cpu: bool = False, output_dir: pathlib.Path | None = None):
        comfyui = pathlib.Path(comfyui).resolve()
        if not (comfyui / "comfy" / "model_management.py").is_file():
            raise SystemExit(f"--comfyui {comfyui}: not a ComfyUI checkout (no comfy/model_management.py)")
        if str(comfyui) not in sys.path:
            sys.path.insert(0, str(comfyui))
        from comfy.cli_args import args  # default arguments: ComfyUI parses argv only as a server

        args.cpu = args.cpu or cpu
        import folder_paths

        self.folder_paths = folder_paths
        if output_dir is not None:
            folder_paths.set_output_directory(str(output_dir))
        from .. import comfy_entrypoint

        extension = asyncio.run(comfy_entrypoint())
        asyncio.run(extension.on_load())
        self.nodes = {cls.GET_SCHEMA().node_id: cls for cls in asyncio.run(extension.get_node_list())}

    def register_file(self, folder: str, path: pathlib.Path) -> str:
        """Make ``path`` selectable in the ``folder`` combos (checkpoints, loras …); returns the
        name the nodes take."""
        path = pathlib.Path(path).resolve()
        if not path.is_file():
            raise SystemExit(f"{path}: no such file")
        self.folder_paths.add_model_folder_path(folder, str(path.parent))
        return path.name

    def run(self, node_id: str, **inputs):
        """Execute one node, under inference mode as ComfyUI's executor does; returns its
        outputs as a tuple."""
        if node_id not in self.nodes:
            raise SystemExit(f"node {node_id} is not loaded (pack incomplete?): {sorted(self.nodes)}")
        with torch.inference_mode():
            return tuple(self.nodes[node_id].execute(**inputs).result)

    @staticmethod
    def terminal_progress(label: str):
        """Route ComfyUI progress bars to one updating terminal line."""
        import comfy.utils

        started = time.monotonic()

        def hook(value, total, preview=None, node_id=None):
            elapsed = time.monotonic() - started
            eta = elapsed / value * (total - value) if value else 0.0
            end = "\n" if value >= total else ""
            print(f"\r{label}: {value}/{total} ({elapsed:.0f} s, ~{eta:.0f} s left)   ",
                  end=end, file=sys.stderr, flush=True)

        comfy.utils.set_progress_bar_global_hook(hook)
