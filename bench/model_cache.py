"""The random-weight SD1.5-architecture model folder shared by the host tests and the benchmark:
built once by ``sd15_models.py`` under ComfyUI's Python, cached under ``$FINEXTRACT_TEST_CACHE``
(default ``~/.cache/finextract-host-tests``) keyed by the builder's source and size."""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import tempfile

BUILDER = pathlib.Path(__file__).resolve().with_name("sd15_models.py")


def cache_root() -> pathlib.Path:
    return pathlib.Path(os.environ.get("FINEXTRACT_TEST_CACHE",
                                       pathlib.Path.home() / ".cache" / "finextract-host-tests"))


def model_folder(comfyui: str | os.PathLike, python: str, full: bool = False) -> pathlib.Path:
    """The folder with ``checkpoints/``, ``loras/`` and ``manifest.json``; builds it if missing
    (small: ~40 s; full SD1.5 UNet: a few minutes and ~4 GB)."""
    digest = hashlib.sha256(BUILDER.read_bytes()).hexdigest()[:16]
    folder = cache_root() / f"{digest}-{'full' if full else 'small'}"
    if (folder / "manifest.json").is_file():
        return folder
    cache_root().mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="build-", dir=cache_root()))
    cmd = [python, str(BUILDER), str(tmp)] + (["--full"] if full else [])
    proc = subprocess.run(cmd, cwd=comfyui, capture_output=True, text=True)
    if proc.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RuntimeError(f"building test models failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    tmp.rename(folder)
    return folder


def manifest(folder: pathlib.Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())
