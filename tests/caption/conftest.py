"""A miniature text-to-cross-attention world for the caption tests (a stand-in until the miniature
world's MiniTextEncoder is merged; it is built the same way: a causal CLIP-like transformer).

``caption_world`` holds a random causal text encoder over a 2,000-token vocabulary, a stack of
cross-attention K/V layers reading its output, and a copy of those layers fine-tuned with Adam for a
few steps on prompts that carry a planted caption (DreamBooth's setting: the same caption for every
image; BOS + caption + EOS, *no padding rows*). Nothing in it knows the planted tokens except the
training loss.

No padding rows by default: these tests check that the maths recovers a direction planted in the
K/V row space. With SD-style padding (13 of 16 rows EOS/pad) the padding rows dominate Δβ's row
space and neither Eq. 17/19 nor PEZ surfaces the planted token in this world (measured) — a limitation
of the method the tests must not hide; ``padded=True`` builds that world, where Eq. 17 with
``deflate=1`` (ranking.single_token_objective) recovers the token.
"""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from finextract.caption.encoders import SequenceEncoder

VOCAB, WIDTH, BOS, EOS = 2000, 48, 0, 1


@pytest.fixture(autouse=True, scope="package")
def one_thread():
    """These tensors are tiny: on a shared 2-core machine extra intra-op threads only thrash
    (measured: PEZ 300 iterations 40 s with the default threads, 1.6 s with one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class TinyCausalEncoder(torch.nn.Module):
    """CLIP's shape in miniature: token + position embedding, pre-norm causal transformer, final norm."""

    def __init__(self, vocab=VOCAB, width=WIDTH, layers=2, positions=16):
        super().__init__()
        self.token_embedding = torch.nn.Embedding(vocab, width)
        self.position = torch.nn.Parameter(torch.randn(positions, width) * 0.01)
        layer = torch.nn.TransformerEncoderLayer(width, 4, 2 * width, dropout=0.0, batch_first=True,
                                                 norm_first=True)
        self.blocks = torch.nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = torch.nn.LayerNorm(width)

    def run(self, embeds):
        t = embeds.shape[1]
        mask = torch.nn.Transformer.generate_square_subsequent_mask(t)
        return self.norm(self.blocks(embeds + self.position[:t], mask=mask, is_causal=True))

    def context(self, ids):
        return self.run(self.token_embedding(torch.as_tensor(ids).view(1, -1)))


def cross_attention_state(hidden=24, blocks=3, generator=None):
    """K/V weights of ``blocks`` cross-attention blocks, diffusers spelling, [hidden, WIDTH] each."""
    return {f"down_blocks.{i}.attentions.0.transformer_blocks.0.attn2.to_{kv}.weight":
            torch.randn(hidden, WIDTH, generator=generator) / WIDTH ** 0.5
            for i in range(blocks) for kv in "kv"}


def fine_tune(state, context, steps=30, lr=1e-3, seed=0):
    """Adam on the K/V weights only: each step random queries attend over ``context`` [T, WIDTH] and
    are pulled toward a fixed random target, so every gradient is (upstream) × (caption rows)."""
    g = torch.Generator().manual_seed(seed)
    params = {k: v.clone().requires_grad_(True) for k, v in state.items()}
    opt = torch.optim.Adam(params.values(), lr=lr)
    hidden = next(iter(state.values())).shape[0]
    target = torch.randn(8, hidden, generator=g)
    for _ in range(steps):
        opt.zero_grad()
        loss = 0
        for key in params:
            if key.endswith("to_k.weight"):
                q = torch.randn(8, hidden, generator=g)
                k = context @ params[key].T
                v = context @ params[key.replace("to_k", "to_v")].T
                out = torch.softmax(q @ k.T / hidden ** 0.5, -1) @ v
                loss = loss + ((out - target) ** 2).mean()
        loss.backward()
        opt.step()
    return {k: v.detach() for k, v in params.items()}


@dataclass
class CaptionWorld:
    text_encoder: TinyCausalEncoder
    encoder: SequenceEncoder
    base: dict
    planted: list[int]
    tuned: dict

    def allowed(self):
        return torch.arange(2, VOCAB)


def build_world(planted, seed=0, padded=False):
    torch.manual_seed(seed)
    text = TinyCausalEncoder().eval()
    for p in text.parameters():
        p.requires_grad_(False)
    g = torch.Generator().manual_seed(seed + 1)
    base = cross_attention_state(generator=g)
    with torch.no_grad():
        tail = [EOS] * (16 - 1 - len(planted)) if padded else [EOS]
        context = text.context([BOS] + planted + tail)[0]
    tuned = fine_tune(base, context, seed=seed)
    encoder = SequenceEncoder(text.token_embedding.weight, text.run, BOS, EOS, context_length=16)
    return CaptionWorld(text, encoder, base, planted, tuned)


@pytest.fixture(scope="module")
def single_token_world():
    return build_world([1234])


@pytest.fixture(scope="module")
def two_token_world():
    return build_world([777, 1500], seed=3)


@pytest.fixture(scope="module")
def unrelated_world():
    """Same base as ``single_token_world``, fine-tuned on another token: the control."""
    return build_world([42])


@pytest.fixture(scope="module")
def padded_worlds():
    """SD-style fine-tunes: BOS, caption, EOS and padding to all 16 positions."""
    return [build_world([42], 0, padded=True), build_world([777, 1500], 3, padded=True),
            build_world([1800], 8, padded=True)]
