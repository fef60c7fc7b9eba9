"""Hard-prompt extraction (Algorithm 1) through a real (miniature) text encoder."""
import pytest
import torch

from finextract.caption import pez, ranking, weight_delta
from finextract.caption.encoders import ConcatenatedEncoders, SequenceEncoder


@pytest.mark.parametrize("optimiser", pez.OPTIMISERS)
def test_pez_recovers_planted_token(single_token_world, optimiser):
    layers = weight_delta.from_state_dicts(single_token_world.base, single_token_world.tuned)
    calls = []
    best = pez.hard_prompt(single_token_world.encoder, ranking.objective(layers, "eq17"), length=2,
                           iterations=300, optimiser=optimiser, seed=1, allowed=single_token_world.allowed(), rows="prompt",
                           progress=lambda done, total: calls.append((done, total)))
    assert single_token_world.planted[0] in best.token_ids
    assert len(best.token_ids) == 2 and calls[-1] == (300, 300)
    start = pez.hard_prompt(single_token_world.encoder, ranking.objective(layers, "eq17"), length=2,
                            iterations=0, seed=1, allowed=single_token_world.allowed(), rows="prompt")
    assert best.score > start.score  # the optimisation, not the random start, found it


def test_pez_stops_on_interrupt(single_token_world):
    layers = weight_delta.from_state_dicts(single_token_world.base, single_token_world.tuned)

    class Stop(Exception):
        pass

    count = []

    def check():
        count.append(1)
        if len(count) > 5:
            raise Stop

    with pytest.raises(Stop):
        pez.hard_prompt(single_token_world.encoder, ranking.objective(layers, "eq17"), iterations=1000,
                        check_interrupt=check)
    assert len(count) == 6


def test_short_run_of_causal_encoder_equals_padded_run(single_token_world):
    """``causal=True`` (BOS + prompt only) gives the same prompt rows as the padded 16-token run, and
    ``encode_sequence`` holds those rows at positions 1..L."""
    text = single_token_world.text_encoder
    short = single_token_world.encoder
    padded = SequenceEncoder(text.token_embedding.weight, text.run, 0, 1, context_length=16, causal=False)
    prompt = text.token_embedding.weight[torch.tensor([[5, 900, 77]])]
    torch.testing.assert_close(short.encode(prompt), padded.encode(prompt), rtol=1e-5, atol=1e-5)
    sequence = short.encode_sequence(prompt)
    assert sequence.shape == (1, 16, 48)
    torch.testing.assert_close(sequence[:, 1:4], short.encode(prompt), rtol=1e-5, atol=1e-5)


def test_concatenated_encoders_sdxl_shape(single_token_world):
    """SDXL: two encoders over one vocabulary; inputs and outputs concatenated along features, and
    the projection picks a token of the shared vocabulary."""
    text = single_token_world.text_encoder
    first = single_token_world.encoder
    second = SequenceEncoder(text.token_embedding.weight * 3.0, lambda x: text.run(x / 3.0) * 2.0, 0, 1,
                             context_length=16)
    both = ConcatenatedEncoders([first, second])
    ids = torch.tensor([5, 900])
    out = both.encode(both.token_embedding[ids].unsqueeze(0))
    assert out.shape == (1, 2, 96) and both.encode_sequence(both.token_embedding[ids].unsqueeze(0)).shape == (1, 16, 96)
    torch.testing.assert_close(out[..., 48:], 2.0 * out[..., :48])
    assert both.nearest_tokens(both.token_embedding[ids] + 0.01, torch.arange(2000)).tolist() == [5, 900]
    with pytest.raises(ValueError, match="share token ids"):
        ConcatenatedEncoders([first, SequenceEncoder(torch.zeros(10, 4), text.run, 0, 1)])
