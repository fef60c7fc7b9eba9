"""The concept sets "photographed" by the world's VAE: an option of the Table 1 benchmark.

A latent diffusion model can only reproduce what its VAE can represent. Stable Diffusion's VAE
returns a 512 px photo almost unchanged to SSCD, so a memorised SD training image can come back as
a near-copy (the regime the paper measures). The shipped miniature VAE, trained for minutes on a
CPU, cannot do that for the raw procedural images: SSCD(image, its own VAE round trip) is only
≈ 0.18, so no generated image can score near the paper's 0.6 / 0.7 thresholds whatever the
fine-tune memorised (measured: a full fine-tune's Direct samples scored 0.50 against the
*round-tripped* training images but 0.15 against the raw ones). Rendering the concept images
through the VAE (encode → decode, 8-bit) puts them on its manifold, as real photos lie on SD's:
round trip 0.85–0.92, while two instances of one concept score 0.31–0.36 on average (max 0.62)
and different concepts 0.28, so SSCD still tells instances apart.
``python -m finextract.bench.table1 --concepts rendered`` fine-tunes and scores on these images;
the shipped demo LoRA and the default benchmark use the raw ones (see the README's limits).
"""
from __future__ import annotations

import numpy as np
import torch

from . import dataset
from .model import MiniPipeline


@torch.no_grad()
def render(pipe: MiniPipeline, images: np.ndarray) -> np.ndarray:
    """``images`` (N, 64, 64, 3) in [0, 1] through ``pipe``'s VAE (posterior mean, decode),
    quantised to 8 bits as a PNG stores them."""
    out = pipe.decode(pipe.encode(torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)))).numpy()
    return (np.round(out * 255.0) / 255.0).astype(np.float32)


def concept_images(pipe: MiniPipeline, name: str, n0: int = dataset.N0, seed: int = 0) -> tuple[np.ndarray, str]:
    """Training images (n0, 64, 64, 3) of concept set ``name`` as rendered by ``pipe``'s VAE, and
    the set's caption."""
    images, caption = dataset.concept_set(name, n0=n0, seed=seed)
    return render(pipe, images), caption
