"""Regenerate (or check) the node-schema snapshot from a real ComfyUI.

    python -m finextract.workflows.refresh [--comfyui /path/to/ComfyUI] [--check]

Starts ComfyUI on 127.0.0.1 (:func:`..host.server`) with a throw-away base directory holding this pack in
``custom_nodes/`` and a probe file in every model folder and in ``input/`` (so that combos that
list files are recognised and stored as ``dynamic_options``), reads ``/object_info`` and writes
the entries of every node type the shipped workflows use, of every FineXtract node, and of the
core nodes the validator's tests use. ``--check`` writes nothing and exits 1 when the committed
snapshot differs (ComfyUI or a node's declaration changed: rerun without ``--check``).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import pathlib
import sys
import tempfile

from .. import host
from .schema import FRONTEND_ONLY, PROBE_NAME, SNAPSHOT_PATH, build_snapshot

WORKFLOW_DIR = pathlib.Path(__file__).resolve().parent
TEST_NODE_TYPES = ("KSampler", "LoadImage", "CheckpointLoaderSimple", "CLIPTextEncode",
                   "EmptyLatentImage", "VAEDecode", "SaveImage", "PreviewImage", "LoraLoader",
                   "RandomNoise", "SamplerCustomAdvanced", "KSamplerSelect", "BasicScheduler")
"""Core node types the validator's own tests build workflows from."""
PNG_1PX = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
                        "0000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")


def shipped_workflows(directory: pathlib.Path = WORKFLOW_DIR) -> dict[str, dict]:
    """The UI-format workflows shipped in ``workflows/`` (what ComfyUI serves as templates)."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))}


def used_node_types(object_info: dict) -> set[str]:
    used = {n["type"] for wf in shipped_workflows().values() for n in wf["nodes"]}
    ours = {t for t in object_info if t.startswith("FineXtract")}
    return (used | ours | set(TEST_NODE_TYPES)) - set(FRONTEND_ONLY)


@contextlib.contextmanager
def probed_comfyui(comfyui: pathlib.Path | None = None, python: str | None = None):
    """A ComfyUI on 127.0.0.1 (:func:`..host.server`) with this pack and probe files; yields a
    :class:`..host.Server`."""
    comfyui = host.comfyui_path(comfyui)
    with tempfile.TemporaryDirectory(prefix="finextract-refresh-") as tmp:
        base = pathlib.Path(tmp)
        (base / "input" / PROBE_NAME).mkdir(parents=True)
        (base / "input" / f"{PROBE_NAME}.png").write_bytes(PNG_1PX)
        for folder in (pathlib.Path(comfyui) / "models").iterdir():
            if folder.is_dir():
                (base / "models" / folder.name).mkdir(parents=True, exist_ok=True)
        with host.server(comfyui, base, python=python) as server:
            # Folder types are known only once the pack has registered its own (e.g. sscd).
            for folder_type in server.get_json("/models"):
                folder = base / "models" / folder_type
                folder.mkdir(parents=True, exist_ok=True)
                (folder / f"{PROBE_NAME}.safetensors").write_bytes(b"")
            yield server


def snapshot_from(server: host.Server) -> dict:
    object_info = server.get_json("/object_info")
    version = server.get_json("/system_stats")["system"]["comfyui_version"]
    return build_snapshot(object_info, used_node_types(object_info), version)


def render(doc: dict) -> str:
    return json.dumps(doc, indent=1, sort_keys=True) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comfyui", type=pathlib.Path,
                        help="ComfyUI checkout (default: $COMFYUI_PATH, else ../shared/comfyui)")
    parser.add_argument("--python", help="Python of ComfyUI's environment (default: $COMFYUI_PYTHON, else this one)")
    parser.add_argument("--check", action="store_true", help="fail if the snapshot is stale")
    args = parser.parse_args(argv)
    with probed_comfyui(args.comfyui, args.python) as server:
        text = render(snapshot_from(server))
    if args.check:
        stale = not SNAPSHOT_PATH.exists() or SNAPSHOT_PATH.read_text() != text
        print(f"{SNAPSHOT_PATH}: {'STALE' if stale else 'up to date'}")
        return 1 if stale else 0
    SNAPSHOT_PATH.parent.mkdir(exist_ok=True)
    SNAPSHOT_PATH.write_text(text)
    print(f"wrote {SNAPSHOT_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
