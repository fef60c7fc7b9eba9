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


# Headers as each trainer writes them for the families of issue 12, key for key from their sources:
# kohya-ss sd-scripts train_network.py (+ flux_train_network.update_metadata, sai_model_spec),
# ai-toolkit jobs/process/BaseSDTrainProcess.update_training_metadata + toolkit/metadata.py,
# OneTrainer modelSaver/mixin/DtypeModelSaverMixin._create_safetensors_header, diffusers
# loaders/lora_base.write_lora_layers. Values are examples.
KOHYA_FLUX = {
    "ss_output_name": "mau_flux", "ss_base_model_version": "flux1", "ss_num_train_images": "60",
    "ss_guidance_scale": "1.0", "ss_model_prediction_type": "raw", "ss_apply_t5_attn_mask": "False",
    "ss_datasets": json.dumps([{"is_dreambooth": False, "num_train_images": 60, "subsets": [
        {"img_count": 6, "num_repeats": 10, "caption_prefix": "mau cat, ", "keep_tokens": 1,
         "metadata_file": "meta_cap.json"}]}]),
    "ss_tag_frequency": json.dumps({"meta_cap.json": {"mau cat": 6, "orange fur": 4, "on a sofa": 1}}),
    "ss_dataset_dirs": json.dumps({"meta_cap.json": {"n_repeats": 10, "img_count": 6}}),
    "modelspec.sai_model_spec": "1.0.1", "modelspec.architecture": "flux-1-dev/lora",
    "modelspec.implementation": "https://github.com/black-forest-labs/flux", "modelspec.title": "mau_flux",
}
AI_TOOLKIT_FLUX = {
    "format": "pt", "name": "my_first_flux_lora_v1", "version": "1.0",
    "software": json.dumps({"name": "ai-toolkit", "repo": "https://github.com/ostris/ai-toolkit", "version": "0.7.5"}),
    "training_info": json.dumps({"step": 2000, "epoch": 12}), "ss_base_model_version": "flux.1",
    "ss_output_name": "my_first_flux_lora_v1", "ss_tag_frequency": json.dumps({"1_p3r5on": {"p3r5on": 1}}),
}
ONETRAINER_SD35 = {
    "modelspec.sai_model_spec": "1.0.0", "modelspec.architecture": "stable-diffusion-3.5-large/lora",
    "modelspec.implementation": "https://github.com/Stability-AI/sd3.5", "modelspec.title": "mau",
    "modelspec.date": "2026-11-30", "ot_branch": "master", "ot_revision": "23df3832",
    "ot_config": json.dumps({"model_type": "STABLE_DIFFUSION_35", "concepts": [
        {"name": "mau", "path": "/data/mau", "enabled": True, "type": "STANDARD",
         "text": {"prompt_source": "sample", "prompt_path": ""},
         "concept_stats": {"image_count": 7, "caption_count": 7}},
        {"name": "cats", "path": "/data/reg", "enabled": True, "type": "PRIOR_PREDICTION",
         "concept_stats": {"image_count": 300}},
        {"name": "held out", "path": "/data/val", "enabled": True, "type": "VALIDATION",
         "concept_stats": {"image_count": 2}},
        {"name": "old", "path": "/data/old", "enabled": False, "type": "STANDARD",
         "concept_stats": {"image_count": 40}}],
        "samples": [{"enabled": True, "prompt": "photo of mau cat on a sofa"},
                    {"enabled": False, "prompt": "unused"}]}),
}
ONETRAINER_SDXL_DEFAULT = {  # include_train_config NONE (its default): no ot_config
    "modelspec.sai_model_spec": "1.0.0", "modelspec.architecture": "stable-diffusion-xl-v1-base/lora",
    "modelspec.implementation": "https://github.com/Stability-AI/generative-models", "modelspec.title": "x",
    "ot_branch": "master", "ot_revision": "23df3832", "ss_base_model_version": "sdxl_",
}
DIFFUSERS_FLUX = {
    "format": "pt",
    "lora_adapter_metadata": json.dumps({"transformer.r": 16, "transformer.lora_alpha": 16,
                                         "transformer.target_modules": ["to_k", "to_q", "to_v", "to_out.0"]},
                                        indent=2, sort_keys=True),
}


def _header_file(tmp_path, name, metadata):
    path = tmp_path / name
    save_file({"transformer.single_transformer_blocks.0.proj_out.lora_A.weight": torch.zeros(2, 4)}, str(path),
              metadata=metadata)
    return path


def test_kohya_flux_dataset_config_caption_prefix(tmp_path):
    found = training_metadata(_header_file(tmp_path, "k.safetensors", KOHYA_FLUX))
    assert found.trainer == "kohya-ss" and found.family == "FLUX" and found.base_model_version == "flux1"
    assert found.n0 == 6  # the metadata-file subset's images, not ss_num_train_images (60, with repeats)
    assert found.trigger_words == ["mau cat"]  # the caption prefix every caption carries
    assert found.caption() == "mau cat"
    summary = found.summary()
    assert "caption prefix (added to every caption): mau cat  [from ss_datasets caption_prefix]" in summary
    assert "base model (FLUX): flux-1-dev/lora  [from modelspec.architecture]" in summary


def test_ai_toolkit_trigger_word_is_not_a_tag_count(tmp_path):
    found = training_metadata(_header_file(tmp_path, "a.safetensors", AI_TOOLKIT_FLUX))
    assert found.trainer == "ai-toolkit" and found.family == "FLUX"
    assert found.trigger_words == ["p3r5on"] and found.caption() == "p3r5on"
    assert found.tag_frequency == {} and found.n0 is None  # its "1_p3r5on" folder is synthetic
    assert found.output_name == "my_first_flux_lora_v1"
    summary = found.summary()
    assert "not caption counts): p3r5on  [from ss_tag_frequency]" in summary
    assert "2000 / 12  [from training_info]" in summary and "N0 unknown" in summary


def test_onetrainer_concepts_give_n0_and_sample_prompts(tmp_path):
    found = training_metadata(_header_file(tmp_path, "o.safetensors", ONETRAINER_SD35))
    assert found.trainer == "OneTrainer" and found.family == "SD3"
    assert found.images_per_folder == {"mau": 7} and found.n0 == 7  # prior, validation, disabled: out
    assert found.prompts == ["photo of mau cat on a sofa"]
    assert found.caption() == "photo of mau cat on a sofa"
    summary = found.summary()
    assert "[from ot_config concepts[0].concept_stats.image_count]" in summary
    assert "PRIOR_PREDICTION concept (excluded): cats" in summary and "VALIDATION concept (excluded)" in summary
    default = training_metadata(_header_file(tmp_path, "od.safetensors", ONETRAINER_SDXL_DEFAULT))
    assert default.trainer == "OneTrainer" and default.family == "SDXL"
    assert default.caption() is None and default.n0 is None
    assert "include_train_config was NONE" in default.summary()


def test_diffusers_header_holds_no_caption(tmp_path):
    found = training_metadata(_header_file(tmp_path, "d.safetensors", DIFFUSERS_FLUX))
    assert found.trainer == "diffusers" and found.caption() is None and found.n0 is None
    summary = found.summary()
    assert "'transformer.r': 16" in summary and "model card (README.md)" in summary


@pytest.mark.parametrize("value, family", [("sdxl_base_v1-0", "SDXL"), ("sdxl_1.0", "SDXL"), ("5-large", "SD3"),
                                           ("sd_3", "SD3"), ("flux1", "FLUX"), ("flux-1-schnell/lora", "FLUX schnell"),
                                           ("sd_v1", "SD1.x"), ("sd_2.1", "SD2.x"), ("lumina2", None)])
def test_base_model_versions_name_the_family(tmp_path, value, family):
    found = training_metadata(_header_file(tmp_path, "b.safetensors", {"ss_base_model_version": value}))
    assert found.family == family
