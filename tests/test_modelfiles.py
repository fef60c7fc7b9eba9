"""Model-file provenance, LoRA key spellings and a LoRA layer's update (host-agnostic parts of
the loader)."""
import json

import torch
from safetensors.torch import save_file

from finextract.modelfiles import (applied_tensors, file_record, file_sha256, generation_record, lora_delta,
                                   lora_scale, text_encoder_tensors, with_diffusers_aliases)
from finextract.modelfiles import provenance


def test_diffusers_aliases_cover_peft_spellings():
    key_map = {
        "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.processor.to_k": "diffusion_model.a.weight",
        "unet.mid_block.attentions.0.transformer_blocks.0.attn1.processor.to_out": "diffusion_model.b.weight",
        "lora_unet_down_blocks_0_resnets_0_conv1": "diffusion_model.c.weight",
    }
    out = with_diffusers_aliases(key_map)
    assert out["unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"] == "diffusion_model.a.weight"
    assert out["base_model.model.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"] == "diffusion_model.a.weight"
    assert out["unet.mid_block.attentions.0.transformer_blocks.0.attn1.to_out.0"] == "diffusion_model.b.weight"
    assert all(out[k] == v for k, v in key_map.items())
    assert len(out) == len(key_map) + 4


def test_applied_tensors_by_module_name_in_every_spelling():
    modules = {"lora_unet_a_attn2_to_k", "unet.a.attn2.processor.to_k", "unet.b.attn2.to_v"}
    keys = ["lora_unet_a_attn2_to_k.lora_down.weight", "lora_unet_a_attn2_to_k.alpha",
            "unet.a.attn2.processor.to_k_lora.up.weight", "unet.b.attn2.to_v.lora_A.weight",
            "lora_unet_nowhere_to_k.lora_down.weight", "unet.a.attn2.to_q.lora_B.weight"]
    assert applied_tensors(keys, modules) == keys[:4]


def test_text_encoder_tensors_in_the_spellings_comfyui_maps():
    """What a diffusion-model-only base cannot take: kohya lora_te/te1/te2/te3, diffusers and PEFT
    text_encoder/text_encoder_2, generic text_encoders.; never a UNet or transformer tensor."""
    te = ["lora_te_text_model_encoder_layers_0_self_attn_k_proj.lora_down.weight", "lora_te1_x.alpha",
          "lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_up.weight", "lora_te3_encoder_block_0.lora_down.weight",
          "text_encoder.text_model.encoder.layers.0.self_attn.k_proj.lora_A.weight",
          "text_encoder_2.text_model.encoder.layers.0.mlp.fc1.lora_B.weight", "text_encoders.clip_l.x.lora_A.weight",
          "lora_prior_te_text_projection.lora_down.weight"]
    unet = ["lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight", "transformer.transformer_blocks.0.attn.to_q.lora_A.weight",
            "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.lora_A.weight",
            "lora_unet_text_encoder_like_name.alpha", "diffusion_model.text_encoder.lora_A.weight"]
    assert text_encoder_tensors(te + unet) == te


def test_sha256_is_cached_per_size_and_mtime(tmp_path):
    path = tmp_path / "m.safetensors"
    path.write_bytes(b"abc")
    first = file_sha256(str(path))
    assert first == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    cached = [v for k, v in provenance._SHA_CACHE.items() if k[0] == str(path.resolve())]
    assert cached == [first]
    path.write_bytes(b"abcd")  # new size: hashed again
    assert file_sha256(str(path)) != first


def test_file_record_names_the_file_and_both_hashes(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file({"w": torch.ones(2)}, str(path))
    record = file_record(str(path), "m.safetensors")
    assert record["bytes"] == path.stat().st_size and record["file"] == "m.safetensors"
    assert record["sha256"] == file_sha256(str(path)) != record["content_sha256"]
    assert len(record["content_sha256"]) == 64


def test_generation_record_is_json_and_complete():
    record = generation_record({"base": {"file": "b", "sha256": "0" * 64}}, method="finextract", w=3.0,
                               k=-0.02, seed=1, start=0, count=50, steps=50, sampler="ddim",
                               scheduler="ddim_uniform", width=512, height=512, batch_size=4,
                               latent_shape=[4, 64, 64])
    again = json.loads(json.dumps(record))
    assert again == record
    assert record["pack_version"] and "derive_seed" in record["per_image_seed_rule"]


def test_lora_delta_scales_by_alpha_over_rank():
    gen = torch.Generator().manual_seed(0)
    up, down = torch.randn(6, 4, generator=gen), torch.randn(4, 5, generator=gen)
    assert torch.allclose(lora_delta(up, down, None), up @ down)
    assert torch.allclose(lora_delta(up, down, 2.0), 0.5 * up @ down)  # alpha 2, rank 4
    assert torch.allclose(lora_delta(up, down, torch.tensor(2.0), strength=0.5), 0.25 * up @ down)
    assert lora_scale(None, 4) == 1.0 and lora_scale(torch.tensor(8.0), 4) == 2.0
    assert not lora_delta(torch.zeros_like(up), down, 4.0).any()
    conv = lora_delta(up.reshape(6, 4, 1, 1), torch.randn(4, 5, 3, 3, generator=gen), 4.0)
    assert conv.shape == (6, 45)


def test_lora_delta_with_a_tucker_mid_factor():
    gen = torch.Generator().manual_seed(1)
    up, down, mid = torch.randn(6, 4, 1, 1, generator=gen), torch.randn(4, 5, 1, 1, generator=gen), torch.randn(4, 4, 3, 3, generator=gen)
    expected = torch.zeros(6, 5, 3, 3)
    for i in range(6):
        for j in range(5):
            expected[i, j] = sum(up[i, m, 0, 0] * mid[m, n] * down[n, j, 0, 0] for m in range(4) for n in range(4))
    assert torch.allclose(lora_delta(up, down, None, mid), expected.reshape(6, -1), atol=1e-5)
