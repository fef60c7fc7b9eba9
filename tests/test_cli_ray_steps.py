"""Which step a free Ray worker takes (``cli.ray_audit.next_step``): the model it holds first
(its pair stays loaded), then another model of the same base, then the next in manifest order;
what a worker is handed of a model (its files, absolute) and names when it lacks one.
The cluster itself is tested for real in ``tests/host/test_cli_ray.py``."""
import argparse
import pathlib

import torch
from safetensors.torch import save_file

from finextract.cli.pipeline import ModelSpec
from finextract.cli.ray_audit import Step, absolute, missing_inputs, next_step

BASES = ["sd15", "sd15", "sdxl"]


def test_a_worker_keeps_to_its_model_then_its_base():
    pending = [Step(0, 1), Step(1, 0), Step(2, 0), Step(2, 1)]
    assert next_step(pending, None, BASES) == Step(0, 1)
    assert next_step(pending, 2, BASES) == Step(2, 0)
    assert next_step([Step(2, 0), Step(1, 0)], 0, BASES) == Step(1, 0)  # model 0 done: same base first
    assert next_step(pending[2:], 1, BASES) == Step(2, 0)  # nothing of its base left
    assert next_step([Step(1, 3), Step(0, None)], 0, BASES) == Step(0, None)  # its merge


def test_workers_get_every_file_of_a_split_model_absolute_and_name_what_they_lack(tmp_path, monkeypatch):
    """Workers run elsewhere: every file a model reads, text encoders and VAE too, goes to them as
    an absolute path, and a worker names the one it cannot see."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train").mkdir()
    for name in ("unet", "lora", "t5", "clip_l"):
        save_file({"w": torch.ones(1)}, str(tmp_path / f"{name}.safetensors"))
    spec = ModelSpec("flux", pathlib.Path("unet.safetensors"), pathlib.Path("train"), "",
                     loras=[(pathlib.Path("lora.safetensors"), 1.0)],
                     clip=(pathlib.Path("t5.safetensors"), pathlib.Path("clip_l.safetensors")), clip_type="flux",
                     vae=pathlib.Path("ae.safetensors"))
    _, (moved,) = absolute(argparse.Namespace(out=pathlib.Path("out"), comfyui=pathlib.Path("c")), [spec])
    assert [field for field, _ in moved.files()] == ["base", "lora", "clip", "clip", "vae"]
    assert all(path.is_absolute() and path.name == rel.name for (_, path), (_, rel) in zip(moved.files(), spec.files()))
    assert missing_inputs(moved) == [f"flux vae {tmp_path / 'ae.safetensors'}: no such file; check the path"]
