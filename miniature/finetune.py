"""Fine-tuning the miniature base on a concept set: the checkpoints FineXtract audits.

Three ways creators personalise a model, scaled to the miniature world (paper Appendix D):
- :func:`dreambooth` — full UNet fine-tune without prior-preservation loss, batch 1, 200·N0 steps.
- :func:`train_lora` — LoRA on the attention projections (to_q/k/v/out of attn1 and attn2), saved
  in kohya's key format (:func:`lora_state_dict`) so ComfyUI's LoRA loader applies the file.
- :func:`two_stage` — Zeng et al.'s improved personalisation: a short textual inversion of the rare
  token's embedding, then a short full fine-tune with that embedding frozen.
Each takes an optional augmentation (:data:`AUGMENTATIONS`: Cutout, RandAugment-like) applied to the
training image at every step, the defences of the paper's Table 4.

All are seeded (one ``torch.Generator`` draws images, timesteps and noise) and return new modules,
leaving the base pipeline untouched.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import pathlib
import re
import time
from typing import Callable

import numpy as np
import safetensors.torch
import torch
import torch.nn.functional as F
from torch import nn

from ..modelfiles import atomic_write, load_safetensors, lora_delta
from . import dataset
from .model import MiniPipeline, load_pipeline, training_timesteps, v_target
from .tokenizer import encode, tokenize
from .train import lr_factor

LORA_TARGETS = {
    "attention": re.compile(r"\.attn[12]\.(to_q|to_k|to_v|to_out\.0)$"),
    "attention+conv": re.compile(r"\.attn[12]\.(to_q|to_k|to_v|to_out\.0)$|\.(in_layers\.2|out_layers\.3)$"),
    "all": re.compile(r"^(?!.*(time_embed|emb_layers)).*"),
}
"""Which UNet layers a LoRA adapts. ``attention``: the attention projections of every transformer
block (the classic SD LoRA). ``attention+conv``: also both 3×3 convolutions of every ResBlock
(kohya's LoCon), which is how a LoRA reaches the full-resolution levels of this UNet — they carry
no attention. ``all``: every Linear and Conv2d of the UNet but the time-embedding MLPs (LoCon
"full": also the pixel-level input and output convolutions, skips, projections, feed-forwards); the
demo LoRA's, because on this world ``attention+conv`` at rank 64 had not begun to memorise after
1,000 steps (best Direct SSCD 0.14) where a full fine-tune reached 0.56."""

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
"""``augment(image (3,H,W) in [-1,1], generator) -> image``."""


# ---------------------------------------------------------------- augmentations (Table 4 defences)

def cutout(x: torch.Tensor, gen: torch.Generator, size: int = 24) -> torch.Tensor:
    """Cutout (DeVries & Taylor 2017): a random ``size``² square set to grey (0 in [-1, 1])."""
    _, h, w = x.shape
    cy, cx = torch.randint(0, h, (1,), generator=gen).item(), torch.randint(0, w, (1,), generator=gen).item()
    y0, y1 = max(0, cy - size // 2), min(h, cy + size // 2)
    x0, x1 = max(0, cx - size // 2), min(w, cx + size // 2)
    out = x.clone()
    out[:, y0:y1, x0:x1] = 0.0
    return out


def _rand(gen: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * torch.rand((), generator=gen).item()


def rand_augment(x: torch.Tensor, gen: torch.Generator, ops: int = 2, magnitude: float = 0.5) -> torch.Tensor:
    """RandAugment-like (Cubuk et al. 2020): ``ops`` operations drawn uniformly from a small set
    (flip, rotate, translate, brightness, contrast, colour, posterize, sharpness) at ``magnitude``."""
    m = magnitude
    for _ in range(ops):
        op = torch.randint(0, 8, (1,), generator=gen).item()
        if op == 0:
            x = x.flip(-1)
        elif op in (1, 2):
            angle = _rand(gen, -30 * m, 30 * m) * math.pi / 180 if op == 1 else 0.0
            shift = [_rand(gen, -0.3 * m, 0.3 * m) for _ in range(2)] if op == 2 else [0.0, 0.0]
            theta = torch.tensor([[math.cos(angle), -math.sin(angle), shift[0]],
                                  [math.sin(angle), math.cos(angle), shift[1]]], dtype=x.dtype)
            grid = F.affine_grid(theta[None], [1, *x.shape], align_corners=False)
            x = F.grid_sample(x[None], grid, padding_mode="reflection", align_corners=False)[0]
        elif op == 3:
            x = x + _rand(gen, -0.4 * m, 0.4 * m)
        elif op == 4:
            x = (x - x.mean()) * _rand(gen, 1 - 0.6 * m, 1 + 0.6 * m) + x.mean()
        elif op == 5:
            grey = x.mean(0, keepdim=True)
            x = grey + (x - grey) * _rand(gen, 1 - m, 1 + m)
        elif op == 6:
            levels = 2 ** int(round(8 - 4 * m))
            x = torch.round((x + 1) / 2 * (levels - 1)) / (levels - 1) * 2 - 1
        else:
            blur = F.avg_pool2d(F.pad(x[None], (1, 1, 1, 1), mode="replicate"), 3, 1)[0]
            x = x + _rand(gen, -m, m) * (x - blur)
    return x.clamp(-1, 1)


AUGMENTATIONS: dict[str, Augment | None] = {"none": None, "cutout": cutout, "randaugment": rand_augment}


# ---------------------------------------------------------------- the shared training loop

def _images(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).movedim(-1, 1) * 2.0 - 1.0


OnStep = Callable[[int, nn.Module], None]
"""``on_step(steps done, unet being trained)``: called after every step (calibration curves)."""


class TrainingCheckpoint:
    """A fine-tune's whole state (trained tensors, optimiser, generator, step, losses, and whatever
    ``extra()`` returns — e.g. a calibration curve's rows so far) saved atomically to ``path`` every
    ``minutes``, so a run of hours survives interruption: the same run started again with
    ``resume=True`` continues at the saved step and ends bit for bit where an uninterrupted run does
    (one generator draws everything, and its state is saved with the step).

    ``identity`` names the run (recipe, steps, concept …); a saved state of another run is refused,
    naming what differs, instead of silently continuing the wrong training."""

    def __init__(self, path: pathlib.Path, identity: dict, minutes: float = 10.0, resume: bool = False,
                 extra: Callable[[], dict] | None = None):
        self.path, self.identity, self.minutes = pathlib.Path(path), identity, minutes
        self.extra = extra or dict
        self.saved: dict | None = None
        if resume and self.path.is_file():
            from ..cli.resume import differences  # the audit's resume names differing runs the same way
            saved = torch.load(self.path, weights_only=False)
            if differs := differences(saved["identity"], identity):
                raise ValueError(f"{self.path} holds another run ({differs}); drop --resume to start afresh")
            self.saved = saved
        self._last = time.monotonic()

    @property
    def step(self) -> int:
        return self.saved["step"] if self.saved else 0

    def due(self) -> bool:
        return time.monotonic() - self._last >= self.minutes * 60

    def save(self, step: int, params: list[torch.Tensor], opt: torch.optim.Optimizer, gen: torch.Generator,
             losses: list[float]) -> None:
        state = {"identity": self.identity, "step": step, "params": [p.detach().clone() for p in params],
                 "opt": opt.state_dict(), "gen": gen.get_state(), "losses": list(losses), **self.extra()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(self.path) as f:
            torch.save(state, f)
        self._last = time.monotonic()
        print(f"[{time.strftime('%H:%M:%S')}] saved the fine-tune at step {step} to {self.path}", flush=True)


def _denoising_steps(pipe: MiniPipeline, unet: nn.Module, images: np.ndarray, context_fn,
                     params, steps: int, lr: float, seed: int, augment: Augment | None,
                     log_every: int = 0, on_step: OnStep | None = None, batch: int = 1,
                     low_t_fraction: float = 0.0, lr_floor: float | None = None,
                     checkpoint: TrainingCheckpoint | None = None) -> list[float]:
    """``steps`` steps of the family's v loss on ``batch`` random images of the set (batch 1 and a
    constant ``lr``: the paper's App. D), optimising ``params``; ``context_fn()`` gives the
    caption's context (recomputed when it is trained). ``low_t_fraction`` of the timesteps are drawn
    below 300 (as the base's pretraining does); ``lr_floor`` set: cosine decay of ``lr`` to
    ``lr_floor``·``lr``; ``checkpoint``: saved every few minutes and at the end, and continued from
    when it holds a saved state. Returns the per-step losses."""
    params = list(params)
    gen = torch.Generator().manual_seed(seed)
    x = _images(images)  # pixel space: the images are the latents
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    a = pipe.alphas_cumprod
    losses = []
    if checkpoint is not None and checkpoint.saved is not None:
        with torch.no_grad():
            for p, saved in zip(params, checkpoint.saved["params"], strict=True):
                p.copy_(saved)
        opt.load_state_dict(checkpoint.saved["opt"])
        gen.set_state(checkpoint.saved["gen"])
        losses = list(checkpoint.saved["losses"])
        print(f"[{time.strftime('%H:%M:%S')}] resumed the fine-tune at step {checkpoint.step}", flush=True)
    for step in range(checkpoint.step if checkpoint is not None else 0, steps):
        if lr_floor is not None:
            for group in opt.param_groups:
                group["lr"] = lr * lr_factor(step, steps, 0, lr_floor)
        idx = torch.randint(0, len(x), (batch,), generator=gen)
        z0 = x[idx] if augment is None else torch.stack([augment(x[i], gen) for i in idx.tolist()])
        t = training_timesteps(batch, gen, low_t_fraction, timesteps=len(a))
        noise = torch.randn(z0.shape, generator=gen)
        at = a[t].view(-1, 1, 1, 1)
        zt = at.sqrt() * z0 + (1 - at).sqrt() * noise
        context = context_fn()
        loss = F.mse_loss(unet(zt, t.float(), context.expand(batch, -1, -1)), v_target(z0, noise, at))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if on_step is not None:
            on_step(step + 1, unet)
        if checkpoint is not None and (checkpoint.due() or step + 1 == steps):
            checkpoint.save(step + 1, params, opt, gen, losses)
        if log_every and (step % log_every == 0 or step == steps - 1):
            print(f"[{time.strftime('%H:%M:%S')}] step {step}/{steps} "
                  f"loss {np.mean(losses[-log_every:]):.4f}", flush=True)
    return losses


def with_unet(pipe: MiniPipeline, unet: nn.Module, text: nn.Module | None = None) -> MiniPipeline:
    """``pipe`` with another UNet (and text encoder)."""
    return MiniPipeline(unet.eval(), (text or pipe.text).eval())


def dreambooth(pipe: MiniPipeline, images: np.ndarray, caption: str, steps: int | None = None,
               lr: float = 1e-4, seed: int = 0, augment: Augment | None = None,
               log_every: int = 0, on_step: OnStep | None = None, **recipe) -> MiniPipeline:
    """Full UNet fine-tune without prior loss (paper App. D: batch 1, 200·N0 steps by default;
    ``recipe``: ``batch``, ``low_t_fraction``, ``lr_floor`` of :func:`_denoising_steps`)."""
    steps = 200 * len(images) if steps is None else steps
    unet = copy.deepcopy(pipe.unet).train().requires_grad_(True)
    context = pipe.encode_text([caption])
    _denoising_steps(pipe, unet, images, lambda: context, unet.parameters(), steps, lr, seed,
                     augment, log_every, on_step, **recipe)
    return with_unet(pipe, unet)


# ---------------------------------------------------------------- LoRA (kohya format)

class LoRALinear(nn.Module):
    """y = W x + (alpha / rank) · up(down(x)); ``up`` starts at zero so training starts at the base."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        self.base, self.rank, self.alpha = base, rank, alpha
        self.down = nn.Linear(base.in_features, rank, bias=False)
        self.up = nn.Linear(rank, base.out_features, bias=False)
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.up.weight)

    def forward(self, x):
        return self.base(x) + self.up(self.down(x)) * (self.alpha / self.rank)


class LoRAConv(nn.Module):
    """kohya LoCon for a conv: y = conv(x) + (alpha / rank) · up(down(x)), ``down`` a conv of the
    layer's kernel to ``rank`` channels, ``up`` a 1×1 conv; ``up`` starts at zero."""

    def __init__(self, base: nn.Conv2d, rank: int, alpha: float):
        super().__init__()
        self.base, self.rank, self.alpha = base, rank, alpha
        self.down = nn.Conv2d(base.in_channels, rank, base.kernel_size, base.stride, base.padding, bias=False)
        self.up = nn.Conv2d(rank, base.out_channels, 1, bias=False)
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.up.weight)

    def forward(self, x):
        return self.base(x) + self.up(self.down(x)) * (self.alpha / self.rank)


def kohya_name(module_path: str) -> str:
    """kohya's LoRA key stem for a UNet module path:
    ``input_blocks.3.1.transformer_blocks.0.attn2.to_k`` → ``lora_unet_input_blocks_3_1_transformer_blocks_0_attn2_to_k``."""
    return "lora_unet_" + module_path.replace(".", "_")


def add_lora(unet: nn.Module, rank: int, alpha: float, seed: int = 0,
             targets: str = "attention") -> dict[str, LoRALinear | LoRAConv]:
    """Wrap every Linear / Conv2d of ``unet`` that :data:`LORA_TARGETS` [``targets``] names (in
    place); returns {module path: wrapper}."""
    wrapped = {}
    pattern = LORA_TARGETS[targets]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for path, module in list(unet.named_modules()):
            if isinstance(module, (nn.Linear, nn.Conv2d)) and pattern.search("." + path):
                parent_path, _, name = path.rpartition(".")
                lora = (LoRALinear if isinstance(module, nn.Linear) else LoRAConv)(module, rank, alpha)
                setattr(unet.get_submodule(parent_path), name, lora)
                wrapped[path] = lora
    if not wrapped:
        raise ValueError("no attention projections found to adapt")
    return wrapped


def lora_state_dict(wrapped: dict[str, LoRALinear]) -> dict[str, torch.Tensor]:
    """kohya-format tensors: ``<stem>.lora_down.weight``, ``.lora_up.weight``, ``.alpha``."""
    out = {}
    for path, lora in wrapped.items():
        stem = kohya_name(path)
        out[f"{stem}.lora_down.weight"] = lora.down.weight.detach().clone().contiguous()
        out[f"{stem}.lora_up.weight"] = lora.up.weight.detach().clone().contiguous()
        out[f"{stem}.alpha"] = torch.tensor(float(lora.alpha))
    return out


def extract_lora(base_unet: nn.Module, tuned_unet: nn.Module, rank: int, targets: str = "all") -> dict[str, torch.Tensor]:
    """A kohya LoRA of the weight change of a full fine-tune (as kohya's
    ``extract_lora_from_models.py`` makes one): for every :data:`LORA_TARGETS` [``targets``]
    Linear / Conv2d, the best rank-``rank`` approximation of ΔW = W_tuned − W_base (truncated
    SVD of ΔW as an out × (in·k·k) matrix; ``up`` = U·S, ``down`` = Vᵀ, alpha = rank so the scale
    is 1). Biases and norm layers are not carried, as in kohya's extraction."""
    tuned = dict(tuned_unet.named_modules())
    pattern = LORA_TARGETS[targets]
    out = {}
    for path, module in base_unet.named_modules():
        if not isinstance(module, (nn.Linear, nn.Conv2d)) or not pattern.search("." + path):
            continue
        delta = (tuned[path].weight.detach() - module.weight.detach()).float()
        if not delta.abs().max() > 0:
            continue
        u, s, vh = torch.linalg.svd(delta.reshape(delta.shape[0], -1), full_matrices=False)
        r = min(rank, len(s))
        up, down = u[:, :r] * s[:r], vh[:r]
        if isinstance(module, nn.Conv2d):
            up, down = up[:, :, None, None], down.reshape(r, *delta.shape[1:])
        stem = kohya_name(path)
        out[f"{stem}.lora_up.weight"] = up.contiguous()
        out[f"{stem}.lora_down.weight"] = down.contiguous()
        out[f"{stem}.alpha"] = torch.tensor(float(r))
    if not out:
        raise ValueError("the fine-tune changed none of the layers a LoRA adapts")
    return out


def save_lora(path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    safetensors.torch.save_file({k: v.to(torch.float16) if k.endswith("weight") else v
                                 for k, v in tensors.items()}, str(path), metadata=metadata or {})


MERGED_PARTS = ("lora_up.weight", "lora_down.weight", "lora_mid.weight", "alpha")
"""The tensors of a layer :func:`merge_lora` applies: kohya's LoRA / LoCon, with LyCORIS's
Tucker ``lora_mid`` (a conv LoCon's k×k core between a 1×1 down and a 1×1 up)."""


def merge_lora(unet: nn.Module, tensors: dict[str, torch.Tensor], strength: float = 1.0) -> nn.Module:
    """A copy of ``unet`` with a kohya LoRA merged: W += strength · up @ (mid) @ down · alpha /
    rank, as ComfyUI's loader does (:func:`..modelfiles.lora_delta`). Raises on keys that match
    no module, and on a layer's tensors it would not apply (LoHa, LoKr, DoRA's ``dora_scale``):
    a wrong file, or one whose change would be merged only in part, fails loudly."""
    merged = copy.deepcopy(unet)
    by_stem = {kohya_name(p): m for p, m in merged.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}
    stems = {k.split(".")[0] for k in tensors}
    unknown = stems - set(by_stem)
    if unknown:
        raise ValueError(f"LoRA keys match no UNet module: {sorted(unknown)[:3]}")
    unmerged = sorted(k for k in tensors if k.partition(".")[2] not in MERGED_PARTS)
    if unmerged:
        raise ValueError(f"LoRA tensors this merge does not apply: {unmerged[:3]}; it merges "
                         f"{', '.join(MERGED_PARTS)} per layer (LoRA, LoCon, Tucker LoCon; not LoHa, LoKr, DoRA)")
    halves = sorted(s for s in stems if not {f"{s}.lora_up.weight", f"{s}.lora_down.weight"} <= set(tensors))
    if halves:
        raise ValueError(f"LoRA layers without both lora_up and lora_down: {halves[:3]}")
    with torch.no_grad():
        for stem in stems:
            weight = by_stem[stem].weight
            weight += lora_delta(tensors[f"{stem}.lora_up.weight"], tensors[f"{stem}.lora_down.weight"],
                                 tensors.get(f"{stem}.alpha"), tensors.get(f"{stem}.lora_mid.weight"),
                                 strength=strength).reshape(weight.shape)
    return merged


def load_lora(pipe: MiniPipeline, path, strength: float = 1.0) -> MiniPipeline:
    """The base pipeline with the LoRA file ``path`` merged into its UNet."""
    return with_unet(pipe, merge_lora(pipe.unet, load_safetensors(path), strength))


def train_lora(pipe: MiniPipeline, images: np.ndarray, caption: str, steps: int | None = None,
               rank: int = 16, alpha: float = 16.0, lr: float = 1e-3, seed: int = 0,
               augment: Augment | None = None, log_every: int = 0,
               targets: str = "attention", on_step: OnStep | None = None, **recipe) -> dict[str, torch.Tensor]:
    """LoRA on :data:`LORA_TARGETS` [``targets``]; returns its kohya-format tensors."""
    steps = 200 * len(images) if steps is None else steps
    unet = copy.deepcopy(pipe.unet).requires_grad_(False)
    wrapped = add_lora(unet, rank, alpha, seed, targets)
    params = [p for m in wrapped.values() for p in (m.down.weight, m.up.weight)]
    for p in params:
        p.requires_grad_(True)
    context = pipe.encode_text([caption])
    _denoising_steps(pipe, unet.train(), images, lambda: context, params, steps, lr, seed, augment,
                     log_every, on_step, **recipe)
    return lora_state_dict(wrapped)


# ---------------------------------------------------------------- two-stage (Zeng et al.)

def invert_token(pipe: MiniPipeline, images: np.ndarray, caption: str, token: str, steps: int = 100,
                 lr: float = 5e-3, seed: int = 0, augment: Augment | None = None, log_every: int = 0,
                 **recipe) -> MiniPipeline:
    """Textual inversion of ``token``'s embedding rows only (``recipe`` as :func:`dreambooth`'s).
    Returns ``pipe``'s UNet with a text encoder carrying the learned rows, so the caption means
    what it was trained on."""
    ids = encode(token)
    prompt = tokenize([caption])
    positions = torch.isin(prompt[0], torch.tensor(ids, dtype=torch.long))
    if not ids or not positions.any():
        raise ValueError(f"caption {caption!r} does not contain the token {token!r}")
    text = copy.deepcopy(pipe.text)
    table = text.embeddings.token_embedding.weight
    learned = table[ids].detach().clone().requires_grad_(True)  # starts at the token's own embedding
    slot = torch.tensor([ids.index(i) for i in prompt[0][positions].tolist()])

    def context():
        embeds = table[prompt].detach().clone()
        embeds[0, positions] = learned[slot]
        return text.from_token_embeddings(embeds)
    unet = copy.deepcopy(pipe.unet).requires_grad_(False)
    _denoising_steps(pipe, unet, images, context, [learned], steps, lr, seed, augment, log_every, **recipe)
    with torch.no_grad():
        table[ids] = learned.detach()
    return with_unet(pipe, pipe.unet, text)


def two_stage(pipe: MiniPipeline, images: np.ndarray, caption: str, token: str,
              inversion_steps: int = 100, inversion_lr: float = 5e-3, steps: int = 400,
              lr: float = 1e-4, seed: int = 0, augment: Augment | None = None,
              log_every: int = 0, on_step: OnStep | None = None, **recipe) -> MiniPipeline:
    """Stage 1: a short textual inversion of ``token`` (:func:`invert_token`: it should represent
    the subject coarsely). Stage 2: full UNet fine-tune (:func:`dreambooth`, ``on_step`` counting
    its steps) with that embedding frozen. ``recipe`` applies to both stages."""
    inverted = invert_token(pipe, images, caption, token, inversion_steps, inversion_lr, seed, augment, log_every,
                            **recipe)
    return dreambooth(inverted, images, caption, steps, lr, seed + 1, augment, log_every, on_step, **recipe)


# ---------------------------------------------------------------- CLI: the shipped demo LoRA

DEMO_LORA = dict(train="lora", rank=56, targets="all", lr=5e-4, steps=2000, batch=5, low_t_fraction=0.5,
                 lr_floor=0.05)
"""The recipe of the shipped demo LoRA: LoRA factors trained directly (rank 56 = alpha on every
Linear / Conv2d but the time embedding, kohya LoCon style), batch 5, lr 5e-4 cosine to 5 %, half
the timesteps below 300, 2,000 steps (cosine horizon 2,000). The length puts it in the paper's
partial regime on this base (Direct sampling, N = 250, 20 DDIM steps, each LoRA's horizon its own
length: 1,000 steps AS 0.305 and 0 of 5 images above 0.6; 1,500 steps 0.503, 1 of 5; 2,000 steps
0.614, 3 of 5; the 6,000-step LoRA of the calibration curve 0.830, 5 of 5 above 0.7). The lr is
what matters: on the first base the same LoRA at 2e-3 had a best Direct SSCD of 0.16 over 250
samples after 1,000 steps, at 5e-4 0.30 over 50; attention-only factors at 5e-3 diverged
(training loss 0.10 → 0.72 within 300 steps)."""


def lora_metadata(concept: str, caption: str, n0: int, rank: int, alpha: float, targets: str,
                  steps: int) -> dict[str, str]:
    """kohya-style header of a LoRA of this world: what a creator's trainer would have written."""
    from .model import FAMILY
    return {"ss_network_module": "networks.lora", "ss_network_dim": str(rank), "ss_network_alpha": str(alpha),
            "ss_num_train_images": str(n0), "ss_max_train_steps": str(steps),
            "ss_tag_frequency": json.dumps({f"1_{concept}": {caption: n0}}),
            "finextract.lora_targets": targets, "finextract.family": FAMILY}


def main(argv: list[str] | None = None) -> None:
    here = pathlib.Path(__file__).resolve().parent
    p = argparse.ArgumentParser(prog="python -m finextract.miniature.finetune",
                                description="Train a LoRA of a shipped concept set on the miniature base "
                                            "(writes weights/mini_lora_<concept>.safetensors).")
    p.add_argument("--concept", default="cat", choices=dataset.CONCEPT_NAMES)
    p.add_argument("--base", type=pathlib.Path, default=here / "weights" / "mini_base.safetensors")
    p.add_argument("--out", type=pathlib.Path, default=None)
    p.add_argument("--steps", type=int, default=DEMO_LORA["steps"])
    p.add_argument("--rank", type=int, default=DEMO_LORA["rank"])
    p.add_argument("--targets", default=DEMO_LORA["targets"], choices=sorted(LORA_TARGETS))
    p.add_argument("--lr", type=float, default=DEMO_LORA["lr"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train", choices=("extract", "lora"), default=DEMO_LORA["train"],
                   help="extract: full fine-tune, then the LoRA of its weight change (SVD, as kohya's "
                        "extract_lora_from_models); lora: train the LoRA factors directly")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    images, caption = dataset.concept_set(a.concept)
    pipe = load_pipeline(a.base)
    recipe = {k: DEMO_LORA[k] for k in ("batch", "low_t_fraction", "lr_floor")}
    if a.train == "extract":
        tuned = dreambooth(pipe, images, caption, a.steps, lr=a.lr, seed=a.seed, log_every=100, **recipe)
        tensors = extract_lora(pipe.unet, tuned.unet, a.rank, a.targets)
    else:
        tensors = train_lora(pipe, images, caption, a.steps, rank=a.rank, alpha=float(a.rank), lr=a.lr, seed=a.seed,
                             log_every=100, targets=a.targets, **recipe)
    out = a.out or here / "weights" / f"mini_lora_{a.concept}.safetensors"
    meta = lora_metadata(a.concept, caption, len(images), a.rank, float(a.rank), a.targets, a.steps)
    meta["finextract.lora_training"] = (f"extracted (truncated SVD, rank {a.rank}) from a full fine-tune of "
                                        f"{a.steps} steps" if a.train == "extract" else "LoRA factors trained directly")
    save_lora(out, tensors, meta)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
