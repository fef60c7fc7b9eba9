"""Pretraining of the miniature world: the VAE, then the UNet on frozen VAE latents.

Deterministic and seeded end to end (data from :mod:`.dataset`, weights from ``build_models(seed)``,
batches and noise from one ``torch.Generator``), so the shipped base can be rebuilt bit for bit on
the same machine. Run ``python -m finextract.miniature.train --help``.

Why each choice:
- VAE: L1 + MSE reconstruction with a tiny KL (LDM's recipe without the GAN/LPIPS terms, which
  would need downloaded networks). Trained on random 32 px crops first (4× cheaper, the network is
  convolutional) then on full 64 px images so the mid-block attention sees its real token count.
  Then the per-channel latent std is folded into quant_conv / post_quant_conv
  (``MiniVAE.fold_latent_scale``) so
  the UNet sees unit-std latents with SD's scale factor set to 1.0.
- UNet: SD1's eps objective on the scaled-linear schedule, 10 % caption dropout to "" (the
  unconditional branch classifier-free guidance and FineXtract's Eq. 13 need), an EMA of the
  weights for sampling. The text encoder stays the frozen seeded random init.
- One intra-op thread: on the project's shared 2-core machine, two threads ran 6× slower than one.
"""
from __future__ import annotations

import argparse
import copy
import math
import pathlib
import time

import numpy as np
import torch
import torch.nn.functional as F

from . import dataset
from .model import build_models, load_pipeline, save_checkpoint

WEIGHTS = pathlib.Path(__file__).resolve().parent / "weights"
BASE_CHECKPOINT = WEIGHTS / "mini_base.safetensors"


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def to_model_images(images: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) floats in [0, 1] → (B, 3, H, W) in [-1, 1], the VAE's input convention."""
    return torch.from_numpy(np.ascontiguousarray(images)).movedim(-1, 1) * 2.0 - 1.0


def vae_loss(vae, x: torch.Tensor, kl_weight: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """(total loss, L1 part) of one reconstruction with a reparameterised posterior sample."""
    mean, logvar = vae.moments(x)
    z = mean + torch.randn_like(mean) * (0.5 * logvar).exp()
    rec = vae.decode(z)
    l1 = (rec - x).abs().mean()
    kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).mean()
    return l1 + F.mse_loss(rec, x) + kl_weight * kl, l1


def train_vae(vae, images: np.ndarray, steps: int, batch: int, lr: float, seed: int,
              crop_steps: int) -> None:
    """Train ``vae`` in place: ``crop_steps`` steps on random 32 px crops, then full images."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    data = to_model_images(images)
    with torch.no_grad():  # start with a near-deterministic posterior (std e^-4)
        vae.quant_conv.bias[vae.quant_conv.out_channels // 2:] = -8.0
    vae.train()
    for step in range(steps):
        idx = torch.randint(0, len(data), (batch,), generator=gen)
        x = data[idx]
        if step < crop_steps:
            oy, ox = torch.randint(0, 33, (2,), generator=gen).tolist()
            x = x[:, :, oy:oy + 32, ox:ox + 32]
        loss, l1 = vae_loss(vae, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps - 1:
            _log(f"vae step {step}/{steps} loss {loss.item():.4f} l1 {l1.item():.4f}")
    vae.eval()


@torch.no_grad()
def encode_latents(vae, images: np.ndarray, batch: int = 256) -> torch.Tensor:
    """Posterior means of ``images`` (N, 4, 16, 16)."""
    return torch.cat([vae.encode(to_model_images(images[i:i + batch]))
                      for i in range(0, len(images), batch)])


def train_unet(unet, text, latents: torch.Tensor, captions: list[str], steps: int, batch: int,
               lr: float, seed: int, alphas_cumprod: torch.Tensor, ema_decay: float = 0.995,
               caption_dropout: float = 0.1, checkpoint=None, checkpoint_every: int = 0):
    """Pretrain ``unet`` in place with SD1's eps loss; returns the EMA copy (what ships).

    ``checkpoint(ema, step)`` is called every ``checkpoint_every`` steps so a long run leaves
    usable intermediate weights behind."""
    from .tokenizer import tokenize
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=0.0)
    warmup = min(200, steps // 10 + 1)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * (0.5 + 0.5 * math.cos(math.pi * min(s / steps, 1.0))))
    ema = copy.deepcopy(unet).requires_grad_(False).eval()
    unet.train()
    tokens = tokenize(captions)
    empty = tokenize([""])
    sqrt_a, sqrt_1ma = alphas_cumprod.sqrt(), (1.0 - alphas_cumprod).sqrt()
    running = None
    for step in range(steps):
        idx = torch.randint(0, len(latents), (batch,), generator=gen)
        z0 = latents[idx]
        ids = tokens[idx].clone()
        drop = torch.rand(batch, generator=gen) < caption_dropout
        ids[drop] = empty
        with torch.no_grad():
            context = text(ids)
        t = torch.randint(0, len(alphas_cumprod), (batch,), generator=gen)
        noise = torch.randn(z0.shape, generator=gen)
        zt = sqrt_a[t].view(-1, 1, 1, 1) * z0 + sqrt_1ma[t].view(-1, 1, 1, 1) * noise
        loss = F.mse_loss(unet(zt, t.float(), context), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        sched.step()
        decay = min(ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), unet.parameters()):
                pe.lerp_(p, 1.0 - decay)
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if step % 50 == 0 or step == steps - 1:
            _log(f"unet step {step}/{steps} loss {running:.4f}")
        if checkpoint is not None and checkpoint_every and (step + 1) % checkpoint_every == 0:
            checkpoint(ema, step + 1)
    unet.eval()
    return ema


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m finextract.miniature.train", description=__doc__.split("\n")[0])
    p.add_argument("stage", choices=("vae", "unet"), help="vae: train + fold the VAE into a checkpoint; "
                   "unet: pretrain the UNet on the VAE of --init")
    p.add_argument("--out", type=pathlib.Path, default=BASE_CHECKPOINT)
    p.add_argument("--init", type=pathlib.Path, help="checkpoint whose VAE (and, for unet, text encoder) to use")
    p.add_argument("--resume", action="store_true", help="unet: start from --init's UNet instead of a fresh one")
    p.add_argument("--images", type=int, default=20000, help="pretraining set size")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--crop-steps", type=int, default=0, help="vae: steps on 32 px crops first")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--checkpoint-every", type=int, default=0)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    images, captions = dataset.pretraining_set(a.images, seed=a.seed)
    _log(f"dataset: {len(images)} images")
    unet, text, vae = build_models(seed=a.seed)
    if a.init is not None:
        pipe = load_pipeline(a.init)
        vae, text = pipe.vae, pipe.text
        if a.resume:
            unet = pipe.unet
    a.out.parent.mkdir(parents=True, exist_ok=True)
    if a.stage == "vae":
        train_vae(vae, images, a.steps, a.batch, a.lr or 2e-3, a.seed, a.crop_steps)
        with torch.no_grad():
            vae.fold_latent_scale(encode_latents(vae, images[:2000]).std(dim=(0, 2, 3)))
        save_checkpoint(a.out, unet, text, vae, {"finextract.stage": "vae"})
        _log(f"wrote {a.out}")
        return
    from .model import alphas_cumprod
    latents = encode_latents(vae, images)
    _log(f"latents: mean {latents.mean():.3f} std {latents.std():.3f}")

    def checkpoint(ema, step):
        save_checkpoint(a.out, ema, text, vae, {"finextract.stage": f"unet-{step}"}, dtype=torch.float16)
        _log(f"wrote {a.out} at step {step}")
    ema = train_unet(unet, text, latents, captions, a.steps, a.batch, a.lr or 5e-4, a.seed,
                     alphas_cumprod(), checkpoint=checkpoint, checkpoint_every=a.checkpoint_every)
    checkpoint(ema, a.steps)


if __name__ == "__main__":
    main()
