"""The N-image generation driver of FineXtract (paper §4.3: N = 50·N0 samples before clustering).

Image i of a run depends only on (seed, i): its starting noise comes from its own generator seeded
with :func:`derive_seed`, never from a shared stream. So image 173 can be reproduced alone, in any
batch size, on any shard, which is what a rights holder needs to show one image as evidence.
"""
from __future__ import annotations

import hashlib
from typing import Callable, Iterable, Sequence

import torch

SampleFn = Callable[[torch.Tensor, Sequence[int]], torch.Tensor]
"""``sample(noise, seeds)``: denoises a batch of starting noises; ``seeds`` are the per-image seeds,
for samplers that draw fresh noise along the way (ancestral / SDE) and must do so per image."""


def derive_seed(seed: int, index: int) -> int:
    """The seed of image ``index`` of a run started with ``seed``: a hash, so runs with adjacent
    seeds never share images (seed + index would)."""
    digest = hashlib.sha256(f"finextract:{int(seed)}:{int(index)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


def image_noise(seed: int, index: int, shape: Sequence[int],
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Starting noise of one image, drawn on the CPU so every device gives the same numbers."""
    generator = torch.Generator(device="cpu").manual_seed(derive_seed(seed, index))
    return torch.randn(tuple(shape), generator=generator, dtype=torch.float32).to(dtype)


class PerImageNoise:
    """A noise source for stochastic (ancestral / SDE) samplers that keeps image i's noise its own.

    Called with any arguments (k-diffusion samplers pass sigmas), it returns a batch of fresh
    standard-normal draws, row r drawn from image r's private generator, seeded from its image seed
    (a different stream from its starting noise). So a stochastic sampler gives image i the same
    path whether it runs alone or in a batch.
    """

    def __init__(self, image_seeds: Sequence[int], shape: Sequence[int], dtype: torch.dtype,
                 device: torch.device | str = "cpu"):
        self.shape, self.dtype, self.device = tuple(shape), dtype, device
        self.generators = [torch.Generator(device="cpu").manual_seed(derive_seed(s, -1))
                           for s in image_seeds]

    def __call__(self, *_sigmas) -> torch.Tensor:
        draws = [torch.randn(self.shape, generator=g, dtype=torch.float32) for g in self.generators]
        return torch.stack(draws).to(device=self.device, dtype=self.dtype)


def shard_indices(n: int, shard: int, num_shards: int) -> list[int]:
    """Image indices that shard ``shard`` of ``num_shards`` generates (round robin), so that the
    union over shards is exactly range(n) and every image is made once."""
    if num_shards < 1 or not 0 <= shard < num_shards:
        raise ValueError(f"shard must satisfy 0 <= shard < num_shards, got {shard}/{num_shards}")
    return list(range(shard, n, num_shards))


def generate(indices: Iterable[int], batch_size: int, seed: int, shape: Sequence[int],
             sample: SampleFn, progress: Callable[[int, int], None] | None = None,
             check_interrupt: Callable[[], None] | None = None) -> torch.Tensor:
    """Generate the images ``indices`` of the run ``seed`` in chunks of ``batch_size``.

    ``shape`` is one image's latent shape (C, H, W). Returns a CPU tensor (len(indices), C, H, W)
    in the order of ``indices``. ``progress(done, total)`` is called after each chunk and
    ``check_interrupt()`` before each, so a host can stop a long run between chunks (the sampler
    itself should check between steps too).
    """
    indices = list(indices)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    out = []
    for start in range(0, len(indices), batch_size):
        if check_interrupt is not None:
            check_interrupt()
        chunk = indices[start:start + batch_size]
        noise = torch.stack([image_noise(seed, i, shape) for i in chunk])
        out.append(sample(noise, [derive_seed(seed, i) for i in chunk]).detach().float().cpu())
        if progress is not None:
            progress(start + len(chunk), len(indices))
    if not out:
        return torch.zeros((0, *shape))
    return torch.cat(out)
