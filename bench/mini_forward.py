"""Cost of the miniature model on this machine: parameters, fp16 file size, and the forward passes
the extraction pipeline repeats (one UNet ε of a batch of N latents per sampling step, N text
contexts, N VAE decodes), plus one training step of the UNet — the numbers the sampler's step count,
N = 50·N0 and the pretraining budget are sized with.

    python -m finextract.bench.mini_forward [--batch 50] [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: spinning OpenMP threads stall on shared cores

import torch  # noqa: E402

from ..miniature import model as mini  # noqa: E402
from ..miniature.tokenizer import tokenize  # noqa: E402


def _best_of(fn, repeats: int) -> float:
    fn()  # warm-up (allocations, kernel selection)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=50, help="images per forward pass")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (best kept)")
    args = parser.parse_args(argv)
    n = args.batch

    unet, text, vae = mini.build_models(seed=0)
    for name, module in (("unet", unet), ("text encoder", text), ("vae", vae)):
        print(f"{name:13s} {sum(p.numel() for p in module.parameters()):>10,d} parameters")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "mini.safetensors")
        mini.save_checkpoint(path, unet, text, vae, dtype=torch.float16)
        print(f"fp16 checkpoint {os.path.getsize(path) / 1e6:.2f} MB")

    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(n, 4, 16, 16, generator=gen)
    t = torch.full((n,), 500.0)
    ids = tokenize(["a photo of a sks dog"] * n)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {n}")
    with torch.no_grad():
        context = text(ids)
        rows = {
            f"text encode x{n}": _best_of(lambda: text(ids), args.repeats),
            f"unet eps x{n}": _best_of(lambda: unet(latents, t, context), args.repeats),
            f"vae decode x{n}": _best_of(lambda: vae.decode(latents), args.repeats),
            f"vae encode x{n}": _best_of(lambda: vae.encode(torch.rand(n, 3, 64, 64) * 2 - 1), args.repeats),
        }
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4)

    def train_step():
        loss = (unet(latents[:32], t[:32], context[:32]) - latents[:32]).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    rows["unet train step x32"] = _best_of(train_step, args.repeats)
    for name, seconds in rows.items():
        count = int(name.rsplit("x", 1)[1])
        print(f"{name:22s} {seconds * 1000:9.1f} ms  ({seconds * 1000 / count:6.2f} ms per image)")
    step = rows[f"unet eps x{n}"]
    print(f"ratio vae decode / one unet step: {rows[f'vae decode x{n}'] / step:.2f}; "
          f"a 50-step CFG sampling (2 eps per step) of {n} images ≈ {100 * step:.1f} s")


if __name__ == "__main__":
    main()
