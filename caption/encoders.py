"""The text-encoder interface caption recovery needs, host-agnostic: E(·) of Eq. 20 as a function of
input token embeddings, so PEZ can differentiate through it.

A :class:`PromptEncoder` maps prompts given as input-token embeddings [B, L, D] to the context rows
the UNet's cross-attention reads: at the L prompt positions (``encode``, [B, L, N]) or the whole
padded sequence (``encode_sequence``, [B, 77, N]: BOS, prompt, EOS, padding — the W = 77 rows of
Appendix A.2). It adds BOS, EOS and padding itself.

* :class:`SequenceEncoder` wraps one CLIP-like encoder (SD1.x's CLIP-L, the miniature world's
  MiniTextEncoder): ``run`` takes whole-sequence input embeddings [B, T, D] and returns the hidden
  states the UNet is conditioned on [B, T, N] (the host picks the layer: last, or penultimate for
  clip-skip/SDXL). ``causal=True`` lets ``encode`` run only BOS + prompt: in a causal encoder (CLIP)
  the rows at the prompt positions do not depend on later positions, so this equals the padded run
  and is several times cheaper; ``causal=False`` always runs ``context_length`` positions.
* :class:`ConcatenatedEncoders` is SDXL: two encoders read the same token ids (CLIP-L and OpenCLIP-G
  share the CLIP BPE vocabulary) and SDXL's cross-attention reads their outputs concatenated along
  the feature axis (768 ‖ 1280 = 2048). So D and N are the concatenations; a prompt's embedding is
  the concatenation of its rows in both tables, and the nearest real token is the one with the
  largest *sum of cosines* over the two tables (each table's scale counts equally).
"""
from __future__ import annotations

from typing import Callable, Protocol, Sequence

import torch


class PromptEncoder(Protocol):
    token_embedding: torch.Tensor
    """[V, D] input embedding table (detached)."""

    def encode(self, prompt_embeds: torch.Tensor) -> torch.Tensor:
        """[B, L, D] prompt input embeddings → [B, L, N] context rows at the prompt positions."""

    def encode_sequence(self, prompt_embeds: torch.Tensor) -> torch.Tensor:
        """[B, L, D] prompt input embeddings → [B, T, N] all rows of the padded sequence."""

    def nearest_tokens(self, embeds: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """Projection E⁻¹ of Algorithm 1: the id among ``allowed`` nearest each row [..., D]."""


def _unit(rows: torch.Tensor) -> torch.Tensor:
    return rows / rows.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def _nearest(unit: torch.Tensor, table_unit: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """The id among ``allowed`` whose unit table row has the largest dot product with each row
    (scored against the whole table, then restricted: gathering the allowed rows of a CLIP-size
    table each step would copy 150 MB and cost more than the encoder's forward and backward)."""
    return allowed[(unit @ table_unit.T)[..., allowed].argmax(-1)]


class SequenceEncoder:
    """One CLIP-like encoder; see the module docstring for ``run`` and ``causal``."""

    def __init__(self, token_embedding: torch.Tensor, run: Callable[[torch.Tensor], torch.Tensor],
                 bos_id: int, eos_id: int, pad_id: int | None = None, context_length: int = 77,
                 causal: bool = True):
        self.token_embedding = token_embedding.detach().float()
        self.unit_table = _unit(self.token_embedding)
        self.run, self.bos_id, self.eos_id = run, bos_id, eos_id
        self.pad_id = eos_id if pad_id is None else pad_id
        self.context_length, self.causal = context_length, causal

    def _run(self, prompt_embeds: torch.Tensor, padded: bool) -> torch.Tensor:
        b, n = prompt_embeds.shape[:2]
        if n + 2 > self.context_length:
            raise ValueError(f"prompt of {n} tokens does not fit the encoder's {self.context_length} positions")
        tail = [self.eos_id] + [self.pad_id] * (self.context_length - n - 2) if padded else []
        table = self.token_embedding.to(prompt_embeds.dtype)
        ids = torch.tensor(tail, dtype=torch.long)
        seq = torch.cat([table[self.bos_id].expand(b, 1, -1), prompt_embeds,
                         table[ids].expand(b, -1, -1)], dim=1)
        return self.run(seq)

    def encode(self, prompt_embeds: torch.Tensor) -> torch.Tensor:
        return self._run(prompt_embeds, padded=not self.causal)[:, 1:1 + prompt_embeds.shape[1]]

    def encode_sequence(self, prompt_embeds: torch.Tensor) -> torch.Tensor:
        return self._run(prompt_embeds, padded=True)

    def nearest_tokens(self, embeds: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        return _nearest(_unit(embeds), self.unit_table, allowed)


class ConcatenatedEncoders:
    """SDXL-style: several encoders over one vocabulary, inputs and outputs concatenated."""

    def __init__(self, encoders: Sequence[SequenceEncoder]):
        sizes = {e.token_embedding.shape[0] for e in encoders}
        if len(sizes) != 1:
            raise ValueError(f"encoders disagree on vocabulary size {sorted(sizes)}: they must share token ids")
        self.encoders = list(encoders)
        self.widths = [e.token_embedding.shape[1] for e in encoders]
        self.token_embedding = torch.cat([e.token_embedding for e in encoders], dim=1)

    def encode(self, prompt_embeds: torch.Tensor) -> torch.Tensor:
        parts = prompt_embeds.split(self.widths, dim=-1)
        return torch.cat([e.encode(p) for e, p in zip(self.encoders, parts)], dim=-1)

    def encode_sequence(self, prompt_embeds: torch.Tensor) -> torch.Tensor:
        parts = prompt_embeds.split(self.widths, dim=-1)
        return torch.cat([e.encode_sequence(p) for e, p in zip(self.encoders, parts)], dim=-1)

    def nearest_tokens(self, embeds: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """Summed per encoder (no concatenated unit table: SDXL's would be another 405 MB)."""
        scores = sum(_unit(p) @ e.unit_table.T for p, e in zip(embeds.split(self.widths, dim=-1), self.encoders))
        return allowed[scores[..., allowed].argmax(-1)]


def clip_text_model(text_model: torch.nn.Module, bos_id: int, eos_id: int) -> SequenceEncoder:
    """A text model with CLIP's ``embeddings.token_embedding`` and a differentiable
    ``from_token_embeddings`` (the miniature world's MiniTextEncoder) as a SequenceEncoder."""
    return SequenceEncoder(text_model.embeddings.token_embedding.weight, text_model.from_token_embeddings,
                           bos_id, eos_id)
