"""What a fine-tune changed, read from real safetensors (and pickled) files: the content hash that
ignores metadata, the tensor-by-tensor comparison per component."""
import math

import pytest
import torch
from safetensors.torch import save_file

from finextract.modelfiles import (TEXT_ENCODER, UNET, compare_files, component_norms, content_sha256,
                                   describe, file_sha256)

PREFIXES = {UNET: ["model.diffusion_model."], TEXT_ENCODER: ["cond_stage_model."]}


def checkpoint(**changes):
    """A tiny SD-style state dict: two UNet tensors, one text-encoder tensor, one VAE tensor."""
    sd = {"model.diffusion_model.a.weight": torch.ones(4, 4),
          "model.diffusion_model.b.bias": torch.zeros(4),
          "cond_stage_model.t.weight": torch.full((2, 3), 2.0),
          "first_stage_model.v.weight": torch.ones(3)}
    sd.update(changes)
    return sd


def write(path, sd, metadata=None):
    save_file(sd, str(path), metadata=metadata)
    return str(path)


def test_content_hash_ignores_metadata_and_container_but_not_values(tmp_path):
    base = write(tmp_path / "base.safetensors", checkpoint())
    resaved = write(tmp_path / "resaved.safetensors", checkpoint(), metadata={"title": "re-saved"})
    pickled = tmp_path / "base.ckpt"
    torch.save({"state_dict": checkpoint()}, pickled)
    moved = write(tmp_path / "moved.safetensors", checkpoint(**{"model.diffusion_model.b.bias": torch.full((4,), 1e-3)}))
    assert file_sha256(base) != file_sha256(resaved)
    assert content_sha256(base) == content_sha256(resaved) == content_sha256(str(pickled))
    assert content_sha256(moved) != content_sha256(base)
    half = write(tmp_path / "half.safetensors", {k: v.half() for k, v in checkpoint().items()})
    assert content_sha256(half) != content_sha256(base)  # another dtype is other content


def test_identical_tensors_in_both_files_are_unchanged_whatever_else_differs(tmp_path):
    base = write(tmp_path / "base.safetensors", checkpoint())
    # what ComfyUI's saver does to an SD1.5 file: drops a tensor; plus a new VAE, a new tensor,
    # the same values in half precision, and metadata
    other = checkpoint(**{"first_stage_model.v.weight": torch.zeros(3), "model.diffusion_model.ema": torch.ones(2)})
    del other["cond_stage_model.t.weight"]
    other["model.diffusion_model.a.weight"] = other["model.diffusion_model.a.weight"].half()
    change = compare_files(base, write(tmp_path / "other.safetensors", other, {"x": "y"}), PREFIXES)
    assert change.unchanged and change.compared == 2
    assert change.relative() == {UNET: 0.0, TEXT_ENCODER: 0.0}


def test_relative_norm_per_component(tmp_path):
    base = write(tmp_path / "base.safetensors", checkpoint())
    # UNet: ‖ΔW‖ = 0.1·4 over ‖W‖ = 4 (the zero bias adds nothing); text encoder untouched
    ft = write(tmp_path / "ft.safetensors", checkpoint(**{"model.diffusion_model.a.weight": torch.full((4, 4), 1.1)}))
    change = compare_files(base, ft, PREFIXES)
    assert not change.unchanged
    assert change.relative()[UNET] == pytest.approx(0.1)
    assert change.relative()[TEXT_ENCODER] == 0.0
    te = write(tmp_path / "te.safetensors", checkpoint(**{"cond_stage_model.t.weight": torch.full((2, 3), 1.0)}))
    assert compare_files(base, te, PREFIXES).relative() == {UNET: 0.0, TEXT_ENCODER: pytest.approx(0.5)}


def test_a_tensor_of_another_shape_is_a_change(tmp_path):
    base = write(tmp_path / "base.safetensors", checkpoint())
    ft = write(tmp_path / "ft.safetensors", checkpoint(**{"model.diffusion_model.b.bias": torch.zeros(5)}))
    change = compare_files(base, ft, PREFIXES)
    assert change.reshaped == 1 and not change.unchanged


def test_a_checkpoint_compares_with_a_diffusion_model_only_file(tmp_path):
    """The same weight is ``model.diffusion_model.a.weight`` in a checkpoint and ``a.weight`` in a
    diffusion-model-only file (BFL's, Comfy-Org's): compared by the name below each file's prefix,
    either way round; names the two files do not share compare nothing."""
    base = write(tmp_path / "base.safetensors", checkpoint())
    bare = {UNET: [""], TEXT_ENCODER: []}
    unet_only = write(tmp_path / "unet.safetensors", {"a.weight": torch.full((4, 4), 1.1), "b.bias": torch.zeros(4)})
    change = compare_files(base, unet_only, PREFIXES, bare)
    assert change.compared == 2 and change.relative()[UNET] == pytest.approx(0.1)
    back = compare_files(unet_only, base, bare, PREFIXES)
    assert back.compared == 2 and back.relative()[UNET] == pytest.approx(0.1 / 1.1)
    other_layout = write(tmp_path / "diffusers.safetensors", {"down_blocks.0.a.weight": torch.ones(4, 4)})
    assert compare_files(base, other_layout, PREFIXES, bare).compared == 0


def test_tensors_read_one_by_one_equal_the_files(tmp_path):
    """:class:`TensorFile` (plain reads, no mapping) gives what safetensors itself loads, in each
    dtype model files use, empty tensors included."""
    from safetensors.torch import load_file

    from finextract.modelfiles.reading import TensorFile

    gen = torch.Generator().manual_seed(0)
    sd = {"f32": torch.randn(3, 5, generator=gen), "f16": torch.randn(7, generator=gen).half(),
          "bf16": torch.randn(2, 2, 2, generator=gen).bfloat16(), "i64": torch.arange(6).reshape(2, 3),
          "bool": torch.tensor([True, False, True]), "u8": torch.arange(4, dtype=torch.uint8), "empty": torch.zeros(0, 4),
          "scalar": torch.tensor(2.5)}
    path = write(tmp_path / "dtypes.safetensors", sd, {"note": "metadata is not a tensor"})
    expected = load_file(path)
    with TensorFile(path) as tensors:
        assert sorted(tensors) == sorted(expected)
        for key, tensor in expected.items():
            got = tensors[key]
            assert got.dtype == tensor.dtype and got.shape == tensor.shape and torch.equal(got, tensor), key


def test_component_norms_read_the_file(tmp_path):
    base = write(tmp_path / "base.safetensors", checkpoint())
    assert component_norms(base, PREFIXES) == {UNET: 16.0, TEXT_ENCODER: 24.0}


def test_describe_says_unchanged_and_how_far():
    text = describe({UNET: 0.0123, TEXT_ENCODER: 0.0})
    assert text == "UNet fine-tuned (‖ΔW‖/‖W‖ = 0.0123), text encoder unchanged"
    assert "unmeasured" in describe({UNET: None, TEXT_ENCODER: 0.0})
    assert math.isclose(float(text.split("= ")[1].split(")")[0]), 0.0123)
