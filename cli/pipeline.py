"""One model's audit through the pack's nodes, with ComfyUI as a library (see ``audit.py``)."""
from __future__ import annotations

import sys

import numpy as np
import torch
from PIL import Image, ImageOps

from .audit import (ModelSpec, contiguous_runs, dump_json, generation_indices, load_generation,
                    save_generation)
from .comfy_library import ComfyLibrary

MAX_LORAS = 3


def load_images(paths, size: int) -> torch.Tensor:
    """Training images as a ComfyUI IMAGE batch (B, H, W, 3) in [0, 1]: RGB, centre-fitted to
    ``size`` square (a batch needs one size; SSCD resizes again anyway)."""
    arrays = [np.asarray(ImageOps.fit(Image.open(p).convert("RGB"), (size, size)), dtype=np.float32) / 255.0
              for p in paths]
    return torch.from_numpy(np.stack(arrays))


class AuditPipeline:
    def __init__(self, args):
        self.args = args
        self.comfy = ComfyLibrary(args.comfyui, cpu=args.cpu, output_dir=args.out)

    def load_pair(self, spec: ModelSpec):
        if len(spec.loras) > MAX_LORAS:
            raise SystemExit(f"{spec.name}: at most {MAX_LORAS} LoRAs")
        slots = {}
        for i in range(1, MAX_LORAS + 1):
            lora = spec.loras[i - 1] if i <= len(spec.loras) else None
            slots[f"lora_{i}"] = self.comfy.register_file("loras", lora[0]) if lora else "none"
            slots[f"strength_{i}"] = lora[1] if lora else 1.0
        finetuned = self.comfy.register_file("checkpoints", spec.finetuned) if spec.finetuned else "none"
        return self.comfy.run("FineXtractDualModelLoader",
                              base_checkpoint=self.comfy.register_file("checkpoints", spec.base),
                              finetuned_checkpoint=finetuned, **slots)

    def generate(self, spec: ModelSpec, pair, n: int, indices: list[int]):
        """Latents of images ``indices`` of the run, and the run's generation record."""
        base, finetuned, clip, _vae, _report, base_clip = pair
        a = self.args
        w = a.w if a.w is not None else (5.0 if spec.loras else 3.0)
        positive = clip.encode_from_tokens_scheduled(clip.tokenize(spec.caption))
        negative = base_clip.encode_from_tokens_scheduled(base_clip.tokenize(""))
        ComfyLibrary.terminal_progress(f"  generating {len(indices)} of {n} images")
        chunks, record = [], None
        for start, count in contiguous_runs(indices):
            (latent,) = self.comfy.run(
                "FineXtractModelGuidanceSampler", base=base, finetuned=finetuned, positive=positive,
                negative=negative, count=count, start=start, batch_size=a.batch_size, seed=a.seed,
                steps=a.steps, sampler_name=a.sampler, scheduler=a.scheduler, width=a.size,
                height=a.size, method=a.method, w=w, k=a.k)
            chunks.append(latent["samples"])
            record = latent["finextract"]
        return torch.cat(chunks), record

    def audit(self, spec: ModelSpec) -> dict | None:
        """Generate (or merge shards), cluster, score; None for a ``--shard`` step."""
        a = self.args
        out = a.out / spec.name
        out.mkdir(parents=True, exist_ok=True)
        training = spec.training_images()
        n0 = len(training)
        n = a.n or 50 * n0
        pair = self.load_pair(spec)
        print(f"  {pair[4]}".replace("\n", "\n  "), file=sys.stderr)
        if a.merge:
            latents, run = load_generation(out)
        else:
            latents, record = self.generate(spec, pair, n, generation_indices(n, a.shard))
            if a.shard:
                path = save_generation(out, latents, record, n, a.shard)
                print(f"  saved {path}", file=sys.stderr)
                return None
            run = {"n": n, **record}
        return self.score(spec, out, pair, latents, run, load_images(training, a.size), n0)
