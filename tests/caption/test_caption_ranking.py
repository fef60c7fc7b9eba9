"""Weight-space caption inversion (Appendix A, Eq. 17/19) on a planted caption, and its bad input."""
import pytest
import torch

from finextract.caption import ranking, weight_delta
from finextract.caption.weight_delta import NoTextLayerChangeError


def _top(world, equation, kind, k=10):
    layers = weight_delta.from_state_dicts(world.base, world.tuned)
    ids = world.allowed()
    if kind == "contextual":
        vocab = ranking.contextual_vocabulary(world.encoder.encode, world.encoder.token_embedding, ids)
    else:
        vocab = ranking.Vocabulary(ids, world.encoder.token_embedding[ids], "raw token embeddings")
    return [t for t, _ in ranking.rank_vocabulary(ranking.objective(layers, equation), vocab, k)]


@pytest.mark.parametrize("kind", ["contextual", "raw"])
def test_eq17_ranks_planted_single_token_top10(single_token_world, kind):
    assert single_token_world.planted[0] in _top(single_token_world, "eq17", kind)


@pytest.mark.parametrize("equation", ["eq17", "eq19"])
def test_multi_token_caption_surfaces_a_planted_token(two_token_world, equation):
    top = _top(two_token_world, equation, "contextual")
    assert set(two_token_world.planted) & set(top), (top, two_token_world.planted)


def test_unrelated_fine_tune_does_not_rank_the_token(single_token_world, unrelated_world):
    """Control: the same base fine-tuned on another token ranks that token, not 1234, so the hit
    above comes from the fine-tune, not from the vocabulary's geometry."""
    top = _top(unrelated_world, "eq17", "contextual", k=3)
    assert single_token_world.planted[0] not in top and unrelated_world.planted[0] in top


def test_changed_layers_are_reported(single_token_world):
    layers = weight_delta.from_state_dicts(single_token_world.base, single_token_world.tuned)
    assert len(layers.changed()) == len(layers.names) == 6
    assert "6 of 6 cross-attention K/V layers changed" in layers.describe()


def test_no_change_pair_raises_clear_error(single_token_world):
    base = dict(single_token_world.base)
    tuned = dict(base)
    tuned["text_encoder.text_model.encoder.layers.0.mlp.fc1.weight"] = torch.ones(2, 2)
    base["text_encoder.text_model.encoder.layers.0.mlp.fc1.weight"] = torch.zeros(2, 2)
    with pytest.raises(NoTextLayerChangeError, match="did not change.*1 text encoder"):
        weight_delta.from_state_dicts(base, tuned)


def test_mismatched_families_are_refused(single_token_world):
    tuned = {k: torch.zeros(v.shape[0], v.shape[1] * 2) for k, v in single_token_world.tuned.items()}
    with pytest.raises(ValueError, match="mismatched model families"):
        weight_delta.from_state_dicts(single_token_world.base, tuned)
    with pytest.raises(ValueError, match="no text-reading key/value weights"):
        weight_delta.from_state_dicts({"conv.weight": torch.zeros(2, 2)}, {"conv.weight": torch.ones(2, 2)})


def test_padding_dominates_eq17_and_deflation_recovers_the_caption(padded_worlds):
    """With padding rows in every training context, plain Eq. 17 ranks the padding's shared direction
    (no planted token in the top 10); dropping the strongest direction (deflate=1) finds them."""
    for world in padded_worlds:
        layers = weight_delta.from_state_dicts(world.base, world.tuned)
        ids = world.allowed()
        vocab = ranking.contextual_vocabulary(world.encoder.encode, world.encoder.token_embedding, ids)
        plain = [t for t, _ in ranking.rank_vocabulary(ranking.objective(layers, "eq17"), vocab, 10)]
        deflated = [t for t, _ in ranking.rank_vocabulary(ranking.objective(layers, "eq17", deflate=1), vocab, 10)]
        assert not set(world.planted) & set(plain)
        assert set(world.planted) & set(deflated), (world.planted, deflated)
