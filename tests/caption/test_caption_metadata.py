"""Training metadata from real safetensors headers (kohya-ss, modelspec), without loading tensors."""
import json
import struct

import pytest
import torch
from safetensors.torch import save_file

from finextract.caption.metadata import NotSafetensorsError, read_header, training_metadata

KOHYA = {
    "ss_output_name": "mau_cat_v1",
    "ss_base_model_version": "sd_v1",
    "ss_num_train_images": "100",  # 5 + 5 images × 10 repeats: counts repeats, not N0
    "ss_dataset_dirs": json.dumps({"10_sks cat": {"n_repeats": 10, "img_count": 5},
                                   "10_sks cat sofa": {"n_repeats": 10, "img_count": 3}}),
    "ss_reg_dataset_dirs": json.dumps({"1_cat": {"n_repeats": 1, "img_count": 200}}),
    "ss_tag_frequency": json.dumps({"10_sks cat": {"sks cat": 5, "on a sofa": 2, "outdoors": 1},
                                    "10_sks cat sofa": {"sks cat": 3, "sofa": 3},
                                    "1_cat": {"cat": 200}}),
    "modelspec.title": "mau cat",
    "modelspec.trigger_phrase": "sks",
}


def test_kohya_metadata_from_real_file(tmp_path):
    path = tmp_path / "mau.safetensors"
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(2, 2)}, str(path), metadata=KOHYA)
    found = training_metadata(path)
    assert found.trainer == "kohya-ss"
    assert found.n0 == 8  # regularisation folder excluded, repeats not counted
    assert found.output_name == "mau_cat_v1" and found.base_model_version == "sd_v1"
    assert "1_cat" not in found.tag_frequency
    assert found.tag_ranking()[0] == ("sks cat", 8)
    assert found.trigger_words == ["sks", "sks cat", "sks cat sofa"]
    assert found.caption().startswith("sks, sks cat, sks cat sofa")
    assert "sofa" in found.caption() and "outdoors" not in found.caption()  # in every caption vs once
    summary = found.summary()
    assert "[from ss_tag_frequency]" in summary and "not N0" in summary and "[from modelspec.trigger_phrase]" in summary


def test_dataset_config_subsets_and_no_metadata(tmp_path):
    path = tmp_path / "cfg.safetensors"
    datasets = [{"subsets": [{"image_dir": "/data/imgs", "img_count": 4, "num_repeats": 2, "class_tokens": "ohwx dog"},
                             {"image_dir": "/data/reg", "img_count": 50, "is_reg": True}]}]
    save_file({"w": torch.zeros(1)}, str(path), metadata={"ss_datasets": json.dumps(datasets),
                                                          "ss_tag_frequency": json.dumps({"imgs": {"ohwx dog": 4}})})
    found = training_metadata(path)
    assert found.n0 == 4 and found.images_per_folder == {"imgs": 4}
    assert found.caption() == "ohwx dog"
    bare = tmp_path / "bare.safetensors"
    save_file({"w": torch.zeros(1)}, str(bare))
    empty = training_metadata(bare)
    assert empty.n0 is None and empty.caption() is None and "no training metadata" in empty.summary()


def test_header_read_without_tensors(tmp_path):
    """Only the header is read: a file whose tensor bytes are missing still yields its metadata."""
    header = json.dumps({"__metadata__": {"ss_output_name": "x"},
                         "w": {"dtype": "F32", "shape": [1000000], "data_offsets": [0, 4000000]}}).encode()
    path = tmp_path / "truncated.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header)
    assert read_header(path)["__metadata__"]["ss_output_name"] == "x"


@pytest.mark.parametrize("content, message", [
    (b"\x80\x04", "too short"),
    (b"PK\x03\x04" + b"\x00" * 100, "does not fit"),  # a zip-format .ckpt
    (struct.pack("<Q", 4) + b"nope", "not JSON"),
    (struct.pack("<Q", 2) + b"[]", "not a JSON object"),
])
def test_non_safetensors_files_raise(tmp_path, content, message):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(NotSafetensorsError, match=message):
        training_metadata(path)
