"""``finextract audit`` end to end with ComfyUI as a library (real nodes, real model files built by
the harness, real SSCD), run as a subprocess exactly as a user's release script would."""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from finextract.cli.shards import merge_shards

ROOT = pathlib.Path(__file__).resolve().parents[2]
SMALL = ["--n", "4", "--steps", "2", "--size", "64", "--sampler", "euler", "--scheduler", "normal",
         "--batch-size", "2", "--seed", "5", "--cpu"]


def audit(tmp_path, *argv, check=True):
    """Run ``python -m finextract audit`` with this checkout importable as ``finextract``."""
    shim = tmp_path / "pythonpath"
    if not shim.exists():
        shim.mkdir()
        (shim / "finextract").symlink_to(ROOT, target_is_directory=True)
    env = {**os.environ, "PYTHONPATH": str(shim)}
    proc = subprocess.run([os.environ.get("COMFYUI_PYTHON", sys.executable), "-m", "finextract", "audit",
                           "--comfyui", os.environ["COMFYUI_PATH"], *argv],
                          capture_output=True, text=True, env=env, timeout=900)
    if check and proc.returncode not in (0, 1):
        raise AssertionError(f"audit exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


@pytest.fixture(scope="module")
def model_args(comfy_models, tmp_path_factory):
    train = tmp_path_factory.mktemp("train")
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(train / f"t{i}.png")
    root = comfy_models.root
    return ["--base", str(root / "checkpoints" / comfy_models.checkpoints["base"]),
            "--lora", str(root / "loras" / comfy_models.loras["kohya"]),
            "--train", str(train), "--caption", "a photo of sks dog", "--name", "dog"]


def test_shards_merge_to_the_unsharded_run(tmp_path, model_args):
    # batch size 1 on both sides: CPU kernels round differently per batch size (~1e-5 relative
    # here), which is the driver's concern, not the shards'.
    for shard in ("0/2", "1/2"):
        audit(tmp_path, *model_args, *SMALL, "--batch-size", "1", "--shard", shard, "--out", str(tmp_path / "two"))
    audit(tmp_path, *model_args, *SMALL, "--batch-size", "1", "--shard", "0/1", "--out", str(tmp_path / "one"))
    two, run_two = merge_shards(sorted((tmp_path / "two" / "dog" / "shards").glob("*.safetensors")))
    one, run_one = merge_shards(sorted((tmp_path / "one" / "dog" / "shards").glob("*.safetensors")))
    assert run_two == run_one and run_one["n"] == 4 and run_one["models"]["finetuned"]["finetune"]["kind"] == "lora"
    assert two.shape == (4, 4, 8, 8)
    assert torch.equal(two, one), "image i must not depend on the shard making it"
    assert two.std() > 0
