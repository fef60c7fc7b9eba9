"""Regenerate (or check) the node-schema snapshot from a real ComfyUI.

    python -m finextract.workflows.refresh --comfyui /path/to/ComfyUI [--check]

Starts ComfyUI on 127.0.0.1 with ``--cpu``, a throw-away base directory holding this pack in
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
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from .schema import FRONTEND_ONLY, PROBE_NAME, SNAPSHOT_PATH, build_snapshot

PACK_ROOT = pathlib.Path(__file__).resolve().parent.parent
WORKFLOW_DIR = pathlib.Path(__file__).resolve().parent
PORTS = range(8230, 8240)
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


def free_port() -> int:
    for port in PORTS:
        with contextlib.closing(socket.socket()) as s:
            if s.connect_ex(("127.0.0.1", port)) != 0:
                return port
    raise RuntimeError(f"no free port in {PORTS.start}-{PORTS.stop - 1}")


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 (loopback only)
        return json.load(response)


@contextlib.contextmanager
def probed_comfyui(comfyui: pathlib.Path, python: str = sys.executable, timeout: float = 240):
    """A ComfyUI on 127.0.0.1 with this pack and probe files; yields its base URL."""
    with tempfile.TemporaryDirectory(prefix="finextract-refresh-") as tmp:
        base = pathlib.Path(tmp)
        (base / "custom_nodes").mkdir()
        (base / "custom_nodes" / "comfyui-finextract").symlink_to(PACK_ROOT)
        (base / "input" / PROBE_NAME).mkdir(parents=True)
        (base / "input" / f"{PROBE_NAME}.png").write_bytes(PNG_1PX)
        for folder in (pathlib.Path(comfyui) / "models").iterdir():
            if folder.is_dir():
                (base / "models" / folder.name).mkdir(parents=True, exist_ok=True)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = open(base / "comfyui.log", "w")
        process = subprocess.Popen(
            [python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
             "--base-directory", str(base), "--disable-auto-launch",
             "--database-url", "sqlite:///:memory:"],
            cwd=comfyui, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    get_json(url + "/system_stats")
                    break
                except OSError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"ComfyUI did not start: see {base / 'comfyui.log'}\n"
                                           + (base / "comfyui.log").read_text()[-3000:])
                    time.sleep(1)
            # Folder types are known only once the pack has registered its own (e.g. sscd).
            for folder_type in get_json(url + "/models"):
                folder = base / "models" / folder_type
                folder.mkdir(parents=True, exist_ok=True)
                (folder / f"{PROBE_NAME}.safetensors").write_bytes(b"")
            yield url
        finally:
            process.terminate()
            process.wait(timeout=30)
            log.close()


def snapshot_from(url: str) -> dict:
    object_info = get_json(url + "/object_info")
    version = get_json(url + "/system_stats")["system"]["comfyui_version"]
    return build_snapshot(object_info, used_node_types(object_info), version)


def render(doc: dict) -> str:
    return json.dumps(doc, indent=1, sort_keys=True) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comfyui", required=True, type=pathlib.Path, help="ComfyUI checkout")
    parser.add_argument("--python", default=sys.executable, help="Python of ComfyUI's environment")
    parser.add_argument("--check", action="store_true", help="fail if the snapshot is stale")
    args = parser.parse_args(argv)
    with probed_comfyui(args.comfyui, args.python) as url:
        text = render(snapshot_from(url))
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
