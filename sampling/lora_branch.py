"""The masked LoRA branch: a base + LoRA pair evaluated in ONE batched forward of the base weights.

FineXtract (Eq. 13) needs eps_ft(x, c) and eps_base(x, ∅) at every step; CFG (Eq. 8) needs two
evaluations as well, which hosts batch as [cond, uncond] rows of one forward. For a LoRA fine-tune,
W_ft = W + ΔW with ΔW = scale · up · down of small rank r. Rather than hold a second copy of the base
weights (the paper's implementation keeps two UNets: 1.31× CFG's memory) or re-patch the weights
between the two halves at every step, keep W untouched and add the LoRA's output,
scale · up(down(x)), as a side branch computed only for the batch rows that belong to the
fine-tuned model. Cost: a rank-r product on the fine-tuned rows per LoRA layer (≈ r / d of that
layer's work); memory: the LoRA factors. A patch that is not a plain LoRA (LoHa, LoKr, DoRA, diff)
uses its dense ΔW for that layer instead (:class:`DenseDelta`), exact but as costly as the layer.

Plain torch: works on any ``nn.Linear`` / ``nn.Conv2d`` (and subclasses, e.g. a host's own ops)
through forward hooks, installed for the duration of one sampling run.
"""
from __future__ import annotations

import contextlib
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F


class LowRankDelta:
    """ΔW = scale · up @ down (up: out × r, down: r × in[× kh × kw]), applied as two thin products
    accumulated into the layer's output in place (two kernels per layer: the branch must stay
    cheap next to the layer even when small kernels are slow, as on a busy CPU)."""

    def __init__(self, up: torch.Tensor, down: torch.Tensor, scale: float, rows: tuple[int, int] | None = None):
        """``rows = (start, count)``: the change covers only those output rows of a Linear's weight
        (a LoRA on one projection of a fused weight, e.g. diffusers' ``to_q`` of FLUX's ``qkv``)."""
        self.up, self.down, self.scale, self.rows = up, down, scale, rows
        self.cache: dict = {}

    def _factors(self, module, x):
        slot = (x.device, x.dtype)
        if slot not in self.cache:
            shape = module.weight.shape
            up = (self.scale * self.up.float()).reshape(self.up.shape[0], -1)
            down = self.down.float().reshape(self.down.shape[0], *shape[1:])
            if isinstance(module, torch.nn.Conv2d):
                self.cache[slot] = (up[..., None, None].to(*slot), down.to(*slot))
            else:
                self.cache[slot] = (up.t().contiguous().to(*slot), down.t().contiguous().to(*slot))
        return self.cache[slot]

    def add_to(self, module: torch.nn.Module, x: torch.Tensor, out: torch.Tensor):
        """out += ΔW applied to x (``out`` is the layer's output for these rows, contiguous)."""
        up, down = self._factors(module, x)
        if isinstance(module, torch.nn.Conv2d):
            out += F.conv2d(F.conv2d(x, down, None, module.stride, module.padding, module.dilation), up)
        elif self.rows is None:
            flat = out.view(-1, out.shape[-1])
            flat.addmm_(x.reshape(-1, x.shape[-1]) @ down, up)
        else:
            start, count = self.rows
            out[..., start:start + count] += (x @ down) @ up


class DenseDelta:
    """A full ΔW (or Δbias when ``bias`` is set), for patches that are not plain LoRA."""

    def __init__(self, delta: torch.Tensor, bias: bool = False):
        self.delta, self.bias = delta, bias
        self.cache: dict = {}

    def add_to(self, module: torch.nn.Module, x: torch.Tensor, out: torch.Tensor):
        slot = (x.device, x.dtype)
        if slot not in self.cache:
            self.cache[slot] = self.delta.to(*slot)
        delta = self.cache[slot]
        conv = isinstance(module, torch.nn.Conv2d)
        if self.bias:
            out += delta.view(1, -1, 1, 1) if conv else delta
        elif conv:
            out += F.conv2d(x, delta, None, module.stride, module.padding, module.dilation, module.groups)
        else:
            out += F.linear(x, delta)


def rows_of_chunks(flags: Sequence[int], batch: int, wanted: int) -> list[int]:
    """Batch rows of the chunks flagged ``wanted`` when a forward stacks ``len(flags)`` equal chunks
    (the host's [cond, uncond] batching)."""
    per = batch // len(flags)
    return [r for i, f in enumerate(flags) if f == wanted for r in range(i * per, (i + 1) * per)]


class MaskedBranches:
    """Adds each module's deltas to its output, on the selected batch rows only."""

    def __init__(self, deltas: Mapping[torch.nn.Module, Sequence]):
        for module in deltas:
            if not isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
                raise ValueError(f"a weight delta on a {type(module).__name__} cannot be applied as "
                                 "a branch; load the fine-tune as a full checkpoint")
        self.deltas = dict(deltas)
        self.rows: torch.Tensor | slice | None = None
        self.batch = 0

    @contextlib.contextmanager
    def selecting(self, rows: Sequence[int], batch: int, device):
        """Within the block, forwards of a ``batch``-row input apply the deltas to ``rows``
        (a contiguous run of rows, the usual [cond, uncond] case, is handled as a view)."""
        rows = list(rows)
        if rows and rows == list(range(rows[0], rows[-1] + 1)):
            self.rows = slice(rows[0], rows[-1] + 1)
        else:
            self.rows = torch.tensor(rows, device=device, dtype=torch.long) if rows else None
        self.batch = batch
        try:
            yield
        finally:
            self.rows = None

    def _hook(self, deltas):
        def hook(module, inputs, output):
            if self.rows is None:
                return output
            x = inputs[0]
            if x.shape[0] != self.batch:
                raise RuntimeError(f"a patched {type(module).__name__} sees batch {x.shape[0]} in a "
                                   f"{self.batch}-row forward: this architecture folds the batch, so "
                                   "the branch cannot tell rows apart; load the fine-tune as a full checkpoint")
            if isinstance(self.rows, slice):  # a view: the deltas land in the output directly
                x, out = x[self.rows], output[self.rows]
            else:
                x, out = x.index_select(0, self.rows), torch.zeros_like(output[:len(self.rows)])
            for delta in deltas:
                delta.add_to(module, x, out)
            if not isinstance(self.rows, slice):
                output.index_add_(0, self.rows, out)
            return output
        return hook

    @contextlib.contextmanager
    def installed(self):
        """Forward hooks on the patched modules while the block runs (no-ops outside ``selecting``)."""
        handles = [m.register_forward_hook(self._hook(d)) for m, d in self.deltas.items()]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()
