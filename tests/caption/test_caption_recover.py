"""recover_caption's choice of source, and the miniature world's text encoder as a PromptEncoder."""
import json

import pytest
import torch
from safetensors.torch import save_file

from finextract.caption import weight_delta
from finextract.caption.encoders import clip_text_model
from finextract.caption.recover import CaptionRequest, recover_caption
from finextract.miniature.model import CONFIG, MiniTextEncoder
from finextract.miniature.tokenizer import END, START, tokenize


def _recover(world, method, files=(), layers=True, **settings):
    pair = (lambda: weight_delta.from_state_dicts(world.base, world.tuned)) if layers else None
    return recover_caption(CaptionRequest(method=method, iterations=50, length=2, rows="prompt", **settings), layers=pair,
                           encoder=world.encoder, decode=lambda ids: " ".join(f"t{i}" for i in ids),
                           allowed=world.allowed(), metadata_files=files)


def test_ranking_caption_is_top_tokens(single_token_world):
    result = _recover(single_token_world, "ranking", objective="eq17")
    assert result.caption == " ".join(t for t, _ in result.ranked[:2])
    assert "t1234" in result.caption and result.source[0].startswith("caption from: weight-space ranking")


def test_auto_prefers_metadata_and_tolerates_unchanged_weights(single_token_world, tmp_path):
    path = tmp_path / "lora.safetensors"
    save_file({"x": torch.zeros(1)}, str(path), metadata={"ss_tag_frequency": json.dumps({"1_sks": {"sks toy": 3}})})
    world = single_token_world
    unchanged = type(world)(world.text_encoder, world.encoder, world.base, world.planted, dict(world.base))
    result = _recover(unchanged, "auto", files=[str(path)])
    assert result.caption == "sks, sks toy"
    assert result.source[0].startswith("caption from: training metadata")
    assert any("did not change" in line for line in result.source)
    with pytest.raises(weight_delta.NoTextLayerChangeError):
        _recover(unchanged, "pez", files=[str(path)])


def test_auto_without_metadata_runs_pez(single_token_world, tmp_path):
    bad = tmp_path / "model.ckpt"
    bad.write_bytes(b"\x80\x02not safetensors")
    result = _recover(single_token_world, "auto", files=[str(bad)], objective="eq17")
    assert result.source[0].startswith("caption from: hard-prompt extraction")
    assert any("metadata unreadable" in line for line in result.source)
    with pytest.raises(ValueError, match="no caption in the training metadata"):
        _recover(single_token_world, "metadata", files=[str(bad)])
    with pytest.raises(ValueError, match="needs the base and fine-tuned weights"):
        _recover(single_token_world, "ranking", layers=False)


def test_mini_text_encoder_adapter_matches_its_forward():
    torch.manual_seed(0)
    text = MiniTextEncoder(**CONFIG["text"]).eval()
    encoder = clip_text_model(text, START, END)
    ids = tokenize("a photo of sks dog")
    n = int((ids[0] != END).sum()) - 1  # prompt tokens between START and the first END
    with torch.no_grad():
        full = text(ids)[:, 1:1 + n]
        mine = encoder.encode(text.embeddings.token_embedding.weight[ids[:, 1:1 + n]])
    torch.testing.assert_close(mine, full, rtol=1e-5, atol=1e-5)
