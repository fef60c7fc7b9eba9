"""LoRA deltas in kohya, diffusers (new and old) and PEFT spelling, read back from real
safetensors files, rank exactly as the merged full fine-tune pair (Eq. 17 and Eq. 19)."""
import pytest
import torch
from safetensors.torch import load_file, save_file

from finextract.caption import ranking, weight_delta
from finextract.caption.weight_delta import NoTextLayerChangeError

RANK, ALPHA, STRENGTH = 4, 2.0, 0.8


def _lora_parts(base, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {k: (torch.randn(RANK, w.shape[1], generator=g), torch.randn(w.shape[0], RANK, generator=g) * 0.1)
            for k, w in base.items()}


def _spell(parts, spelling):
    """One LoRA in a trainer's key spelling (base keys are diffusers UNet keys ``….attn2.to_k.weight``)."""
    out = {}
    for key, (down, up) in parts.items():
        module = key.removesuffix(".weight")
        if spelling == "kohya":
            name = "lora_unet_" + module.replace(".", "_")
            out.update({f"{name}.lora_down.weight": down, f"{name}.lora_up.weight": up,
                        f"{name}.alpha": torch.tensor(ALPHA)})
        elif spelling == "diffusers":
            out.update({f"unet.{module}.lora.down.weight": down, f"unet.{module}.lora.up.weight": up,
                        f"unet.{module}.alpha": torch.tensor(ALPHA)})
        elif spelling == "diffusers-old":
            attn, proj = module.rsplit(".", 1)
            out.update({f"{attn}.processor.{proj}_lora.down.weight": down,
                        f"{attn}.processor.{proj}_lora.up.weight": up})
        elif spelling == "peft":
            out.update({f"base_model.model.{module}.lora_A.weight": down,
                        f"base_model.model.{module}.lora_B.weight": up})
    return out


@pytest.mark.parametrize("spelling", ["kohya", "diffusers", "diffusers-old", "peft"])
def test_lora_ranks_like_merged_pair(single_token_world, tmp_path, spelling):
    base = single_token_world.base
    parts = _lora_parts(base)
    scale = (ALPHA / RANK if spelling in ("kohya", "diffusers") else 1.0) * STRENGTH
    merged = {k: base[k] + up @ down * scale for k, (down, up) in parts.items()}
    path = tmp_path / f"{spelling}.safetensors"
    save_file(_spell(parts, spelling), str(path))

    from_lora = weight_delta.from_lora(load_file(str(path)), base, strength=STRENGTH)
    full = weight_delta.from_state_dicts(base, merged)
    assert from_lora.names == full.names
    ids = single_token_world.allowed()
    vocab = ranking.Vocabulary(ids, single_token_world.encoder.token_embedding[ids], "raw token embeddings")
    for equation in ("eq17", "eq19"):
        a = ranking.rank_vocabulary(ranking.objective(from_lora, equation), vocab, 20)
        b = ranking.rank_vocabulary(ranking.objective(full, equation), vocab, 20)
        assert [t for t, _ in a] == [t for t, _ in b]
        assert [s for _, s in a] == pytest.approx([s for _, s in b], rel=1e-4)


def test_lora_without_base_supports_eq17_only(single_token_world):
    lora = _spell(_lora_parts(single_token_world.base), "kohya")
    layers = weight_delta.from_lora(lora)
    assert ranking.objective(layers, "eq17").factor.shape[0] == 48
    with pytest.raises(ValueError, match="Eq. 19 needs them"):
        ranking.objective(layers, "eq19")


def test_conv_only_lora_raises_clear_error():
    g = torch.Generator().manual_seed(0)
    lora = {}
    for i in range(2):
        name = f"lora_unet_down_blocks_0_resnets_{i}_conv1"
        lora.update({f"{name}.lora_down.weight": torch.randn(4, 8, 3, 3, generator=g),
                     f"{name}.lora_up.weight": torch.randn(8, 4, 1, 1, generator=g),
                     f"{name}.alpha": torch.tensor(4.0)})
    lora["lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight"] = torch.randn(4, 8, generator=g)
    lora["lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight"] = torch.randn(8, 4, generator=g)
    with pytest.raises(NoTextLayerChangeError, match="2 convolutions / resnets.*text encoder"):
        weight_delta.from_lora(lora)


def test_lora_against_base_of_other_naming_is_refused(single_token_world):
    lora = _spell(_lora_parts(single_token_world.base), "kohya")
    ldm_base = {f"model.diffusion_model.input_blocks.{i}.1.transformer_blocks.0.attn2.to_k.weight": w
                for i, w in enumerate(single_token_world.base.values())}
    with pytest.raises(ValueError, match="no base weight of the same name"):
        weight_delta.from_lora(lora, ldm_base)
