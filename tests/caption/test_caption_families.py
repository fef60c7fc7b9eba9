"""Weight-space ranking where the text enters through a text stream (SD3's context_block, FLUX's
double blocks), on state dicts with those families' key names: a fine-tune planted on the K (or V)
slice of each block's fused qkv, aligned with one token's row as those weights read it, must rank
that token first; a larger change planted on the Q slice, aligned with another token, must not count
(Q does not read the text's keys and values). The rows the weights read are computed here from the
families' layers (pad, embedder, LayerNorm without affine), independently of caption.families."""
import pytest
import torch

from finextract.caption import pez, ranking, weight_delta

HIDDEN, WIDTH = 32, 48  # the stream's width; the caption world's encoder rows (conftest.WIDTH)
FAMILIES = {  # family → (key of block i's fused qkv, embedder key, embedder input width: SD3 pads to it)
    "SD3": ("model.diffusion_model.joint_blocks.{i}.context_block.attn.qkv.weight",
            "model.diffusion_model.context_embedder", 64),
    "Flux": ("model.diffusion_model.double_blocks.{i}.txt_attn.qkv.weight", "model.diffusion_model.txt_in", WIDTH),
}
TARGET, DECOY = 1234, 777


def base_state(family, blocks=3, seed=0):
    qkv, embedder, width = FAMILIES[family]
    g = torch.Generator().manual_seed(seed)
    state = {qkv.format(i=i): torch.randn(3 * HIDDEN, HIDDEN, generator=g) / HIDDEN ** 0.5 for i in range(blocks)}
    state[f"{embedder}.weight"] = torch.randn(HIDDEN, width, generator=g) / width ** 0.5
    state[f"{embedder}.bias"] = torch.randn(HIDDEN, generator=g) * 0.1
    state[qkv.format(i=0).replace(".qkv.", ".proj.")] = torch.randn(HIDDEN, HIDDEN, generator=g)  # not text-reading
    return state


def stream_row(family, state, rows):
    """A row as the family's qkv reads it: zero-padded encoder row, embedder, LayerNorm (no affine)."""
    _, embedder, width = FAMILIES[family]
    rows = torch.nn.functional.pad(rows, (0, width - rows.shape[-1]))
    hidden = rows @ state[f"{embedder}.weight"].T + state[f"{embedder}.bias"]
    centred = hidden - hidden.mean(-1, keepdim=True)
    return centred / (centred.var(-1, unbiased=False, keepdim=True) + 1e-6).sqrt()


def planted(family, state, table, slice_index=1, scale=0.05):
    """The base plus, in every block, a rank-one change of the K (slice 1) or V (2) rows aligned with
    TARGET's row, and a 10x larger one on the Q rows (slice 0) aligned with DECOY's."""
    qkv = FAMILIES[family][0]
    g = torch.Generator().manual_seed(9)
    target, decoy = (stream_row(family, state, table[t]) for t in (TARGET, DECOY))
    tuned = dict(state)
    for i in range(3):
        key = qkv.format(i=i)
        change = torch.zeros_like(state[key])
        change[slice_index * HIDDEN:(slice_index + 1) * HIDDEN] = scale * torch.outer(torch.randn(HIDDEN, generator=g), target / target.norm())
        change[:HIDDEN] = 10 * scale * torch.outer(torch.randn(HIDDEN, generator=g), decoy / decoy.norm())
        tuned[key] = state[key] + change
    return tuned


@pytest.fixture(scope="module")
def table(single_token_world):
    """The caption world's raw token table [VOCAB, WIDTH]."""
    assert single_token_world.encoder.token_embedding.shape[1] == WIDTH
    return single_token_world.encoder.token_embedding


@pytest.mark.parametrize("family", ["SD3", "Flux"])
@pytest.mark.parametrize("slice_index", [1, 2], ids=["K", "V"])
@pytest.mark.parametrize("equation, scale", [("eq17", 0.05), ("eq19", 2.0)])
def test_planted_kv_change_ranks_its_token_first(table, family, slice_index, equation, scale):
    """Eq. 19 compares rank-one PCAs of the stacked weights before and after, so it sees a change
    only once it turns their top direction: planted at 2.0 (the weights' rows have norm ~1)."""
    state = base_state(family)
    layers = weight_delta.from_state_dicts(state, planted(family, state, table, slice_index, scale))
    assert len(layers.names) == 6 and layers.names[0].endswith(".k") and layers.names[1].endswith(".v")
    assert layers.context_width == FAMILIES[family][2] and layers.accepts(WIDTH)
    assert "3 of 6" in layers.describe() and ("SD3 context_block" if family == "SD3" else "txt_attn") in layers.describe()
    ids = torch.arange(2, len(table))
    vocab = ranking.Vocabulary(ids, table[ids], "raw")
    objective = ranking.objective(layers, equation)
    ranked = ranking.rank_vocabulary(objective, vocab, 5)
    assert ranked[0][0] == TARGET and DECOY not in [t for t, _ in ranked], ranked
    if equation == "eq17":  # the value: Eq. 17 over the K and V slices, from the rows computed here
        tuned = planted(family, state, table, slice_index, scale)
        row = stream_row(family, state, table[TARGET])
        row = row / row.norm()
        qkv = FAMILIES[family][0]
        expected = sum(((tuned[k] - state[k])[HIDDEN:] @ row).square().sum()
                       for k in (qkv.format(i=i) for i in range(3))).sqrt()
        assert ranked[0][1] == pytest.approx(float(expected), rel=1e-4)


def test_rows_wider_than_the_embedder_are_refused(table):
    state = base_state("Flux")
    layers = weight_delta.from_state_dicts(state, planted("Flux", state, table))
    assert not layers.accepts(WIDTH + 16) and not layers.accepts(WIDTH - 1)  # FLUX does not pad
    assert weight_delta.from_state_dicts(base_state("SD3"), planted("SD3", base_state("SD3"), table)).accepts(WIDTH - 1)


def test_missing_embedder_is_named(table):
    state = base_state("SD3")
    tuned = planted("SD3", state, table)
    bare = {k: v for k, v in state.items() if "context_embedder" not in k}
    with pytest.raises(ValueError, match="through 'context_embedder', which the base's weights lack"):
        weight_delta.from_state_dicts(bare, tuned)


def test_pez_through_the_text_stream_finds_the_planted_token(single_token_world):
    """PEZ differentiates through the stream (pad, embedder, LayerNorm) of an SD3 pair planted on
    a token's contextual row (its encoder output after BOS): the optimisation finds that token."""
    encoder = single_token_world.encoder
    ids = torch.tensor([TARGET, DECOY])
    with torch.no_grad():
        rows = encoder.encode(encoder.token_embedding[ids].unsqueeze(1))[:, 0]
    contextual = torch.zeros_like(encoder.token_embedding)
    contextual[ids] = rows
    state = base_state("SD3")
    layers = weight_delta.from_state_dicts(state, planted("SD3", state, contextual))
    objective = ranking.objective(layers, "eq17")
    best = pez.hard_prompt(encoder, objective, length=2, iterations=300, seed=1,
                           allowed=single_token_world.allowed(), rows="prompt")
    start = pez.hard_prompt(encoder, objective, length=2, iterations=0, seed=1,
                            allowed=single_token_world.allowed(), rows="prompt")
    assert TARGET in best.token_ids and best.score > start.score, (best, start)
