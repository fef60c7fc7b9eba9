"""What model guidance costs next to CFG: time per image and peak memory, FineXtract ÷ CFG.

    python -m finextract.bench.guidance_cost [--images 2] [--steps 8] [--size 128] [--full]

Both methods need two model evaluations per step, so FineXtract should cost what CFG costs
(targets: time ≤ 1.05×; a base + LoRA pair's peak memory ≤ 1.05×). Measured side by side in one
run, each configuration in its own fresh process (so one's memory never inflates another's):

- ``tiny``: a small plain-torch denoiser (100 M parameters, no ComfyUI), with the masked LoRA branch
  of :mod:`..sampling.lora_branch` against CFG on merged weights, and the paper implementation's
  layout (two full copies) for reference;
- ``comfy-small`` / ``comfy-sd15`` (when ``COMFYUI_PATH`` is set): a random-weight SD1.5-architecture
  model built with ComfyUI's classes (shrunk UNet; ``--full`` adds the full 860 M-parameter UNet),
  sampled through the real :class:`..nodes.guider.ModelGuidanceGuider`, with a rank-16 LoRA on every
  transformer linear layer and with a full fine-tuned checkpoint.

Peak memory is the process's resident high-water mark during sampling (Linux ``VmHWM``, reset after
loading and a warm-up step), so it counts weights, patched copies and activations, not the loading.
ComfyUI workers run under ``$COMFYUI_PYTHON`` (default: this interpreter).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import torch

from ..sampling import guided_denoised
from ..sampling.lora_branch import LowRankDelta, MaskedBranches, rows_of_chunks

PACKAGE_ROOT = pathlib.Path(__file__).resolve().parent.parent


def reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def timed(run, repeats: int) -> dict:
    """Peak resident memory over ``repeats`` runs after a warm-up call, and the fastest run's
    time (the machine is shared: the minimum is the least disturbed measurement)."""
    run(warmup=True)
    reset_peak()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(warmup=False)
        times.append(time.perf_counter() - start)
    return {"seconds": min(times), "peak_bytes": peak_bytes()}


# --- a small plain-torch model -------------------------------------------------------------

class TinyDenoiser(torch.nn.Module):
    """Residual MLP blocks over latent tokens, conditioned by an added embedding: enough Linear
    layers for weight memory and LoRA cost to show, no host needed."""

    def __init__(self, dim=1024, blocks=12):
        super().__init__()
        self.blocks = torch.nn.ModuleList(torch.nn.Sequential(
            torch.nn.Linear(dim, 4 * dim), torch.nn.GELU(), torch.nn.Linear(4 * dim, dim)) for _ in range(blocks))

    def forward(self, x, cond):
        h = x + cond
        for block in self.blocks:
            h = h + 0.1 * block(h)
        return h


def tiny_worker(pair: str, method: str, images: int, steps: int, repeats: int, rank: int = 16) -> dict:
    torch.manual_seed(0)
    dim, tokens = 1024, 16
    with torch.no_grad():
        base = TinyDenoiser(dim)
        linears = [m for m in base.modules() if isinstance(m, torch.nn.Linear)]
        lora = {m: [LowRankDelta(torch.randn(m.out_features, rank) * 0.01,
                                 torch.randn(rank, m.in_features) / m.in_features ** 0.5, 1.0)] for m in linears}
        if pair == "lora" and method == "cfg":  # a host merges the LoRA into the weights
            for m, (d,) in lora.items():
                m.weight += d.scale * d.up @ d.down
            models, branches = {"ft": base}, None
        elif pair == "lora" and method == "finextract":
            models, branches = {"ft": base}, MaskedBranches(lora)
        else:  # a full fine-tune, or the paper implementation's LoRA layout: two full models
            ft = copy.deepcopy(base)
            for m in ft.modules():
                if isinstance(m, torch.nn.Linear):
                    m.weight += 0.01 * torch.randn_like(m.weight)
            models, branches = ({"ft": ft} if method == "cfg" else {"ft": ft, "base": base}), None
            del ft
        del base, linears
        if branches is None:
            del lora
    cond, empty = torch.full((dim,), 0.1), torch.zeros(dim)
    x0 = torch.randn(images, tokens, dim)

    @torch.no_grad()
    def run(warmup):
        x = x0.clone()
        for i in range(1 if warmup else steps):
            sigma = 1.0 - i / steps
            if "base" in models:  # two models: each runs its half
                out = [models["ft"](x, cond), models["base"](x, empty)]
            else:  # one batched [cond, uncond] forward, as hosts do for CFG
                inp, c = torch.cat([x, x]), torch.cat([cond.expand_as(x), empty.expand_as(x)])
                if branches is not None:
                    with branches.selecting(rows_of_chunks([0, 1], 2 * images, 0), 2 * images, x.device):
                        out = models["ft"](inp, c).chunk(2)
                else:
                    out = models["ft"](inp, c).chunk(2)
            denoised = guided_denoised(method, x, 1.0, out[0], out[1], 5.0, -0.02)
            x = x + (denoised - x) / (steps - i) * sigma

    if branches is not None:
        with branches.installed():
            return timed(run, repeats)
    return timed(run, repeats)


# --- ComfyUI, SD1.5 architecture ------------------------------------------------------------

def comfy_worker(folder: str, pair: str, method: str, images: int, steps: int, repeats: int,
                 size: int) -> dict:
    sys.path.insert(0, os.environ["COMFYUI_PATH"])
    from comfy.cli_args import args
    args.cpu = True
    import comfy.samplers
    import folder_paths
    from ..bench.model_cache import manifest
    from ..nodes.guider import ModelGuidanceGuider
    from ..nodes.pair import load_pair

    folder = pathlib.Path(folder)
    folder_paths.add_model_folder_path("checkpoints", str(folder / "checkpoints"))
    folder_paths.add_model_folder_path("loras", str(folder / "loras"))
    files = manifest(folder)
    base = files["checkpoints"]["base"]["file"]
    if pair == "lora":
        loaded = load_pair(base, None, [(files["loras"]["attention"], 1.0)])
    else:
        loaded = load_pair(base, files["checkpoints"]["finetuned"]["file"], [])
    positive = loaded.clip.encode_from_tokens_scheduled(loaded.clip.tokenize("a photo of sks dog"))
    negative = loaded.base_clip.encode_from_tokens_scheduled(loaded.base_clip.tokenize(""))
    guider = ModelGuidanceGuider(loaded.base, loaded.finetuned, method, 5.0 if pair == "lora" else 3.0, -0.02)
    guider.set_conds(positive, negative)
    del loaded
    sigmas = comfy.samplers.calculate_sigmas(guider.model_patcher.get_model_object("model_sampling"), "normal", steps)
    noise = torch.randn(images, 4, size // 8, size // 8, generator=torch.Generator().manual_seed(0))

    def run(warmup):
        use = sigmas[-2:] if warmup else sigmas
        guider.sample(noise, torch.zeros_like(noise), comfy.samplers.sampler_object("euler"), use,
                      disable_pbar=True, seed=0)

    return timed(run, repeats)


# --- the run ----------------------------------------------------------------------------------

def spawn(python: str, env: dict, *worker_args) -> dict:
    cmd = [python, "-m", "finextract.bench.guidance_cost", "--worker", *map(str, worker_args)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {worker_args} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def package_env(tmp: str) -> dict:
    """An environment whose ``finextract`` is this checkout, whatever is installed."""
    link = pathlib.Path(tmp) / "finextract"
    link.symlink_to(PACKAGE_ROOT, target_is_directory=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([tmp] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


def report(model: str, pair: str, rows: dict, images: int):
    cfg = rows["cfg"]
    for method, r in rows.items():
        print(f"{model:12s} {pair:5s} {method:18s} {r['seconds'] / images:8.3f} s/image "
              f"{r['peak_bytes'] / 2**20:9.0f} MiB peak   time x{r['seconds'] / cfg['seconds']:.3f} "
              f"memory x{r['peak_bytes'] / cfg['peak_bytes']:.3f} vs cfg")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--size", type=int, default=128, help="image size (ComfyUI models), px")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per row (fastest kept)")
    parser.add_argument("--full", action="store_true", help="also the full-size SD1.5 UNet (needs ~12 GB RAM)")
    parser.add_argument("--skip-tiny", action="store_true")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        kind, *rest = args.worker
        if kind == "tiny":
            result = tiny_worker(rest[0], rest[1], *map(int, rest[2:]))
        else:
            result = comfy_worker(rest[0], rest[1], rest[2], *map(int, rest[3:]))
        print(json.dumps(result))
        return
    print(f"FineXtract vs CFG, {args.images} images x {args.steps} steps, each row a fresh process "
          f"(CPU, torch {torch.__version__}, {torch.get_num_threads()} threads)")
    with tempfile.TemporaryDirectory() as tmp:
        env = package_env(tmp)
        if not args.skip_tiny:
            for pair, methods in (("lora", ("cfg", "finextract")), ("full", ("cfg", "finextract"))):
                rows = {m: spawn(sys.executable, env, "tiny", pair, m, args.images, args.steps, args.repeats) for m in methods}
                report("tiny", pair, rows, args.images)
        comfyui = os.environ.get("COMFYUI_PATH")
        if not comfyui:
            print("COMFYUI_PATH unset: ComfyUI SD1.5-architecture rows skipped")
            return
        from .model_cache import model_folder
        python = os.environ.get("COMFYUI_PYTHON", sys.executable)
        for model, full in (("comfy-small", False), ("comfy-sd15", True))[: 2 if args.full else 1]:
            folder = model_folder(comfyui, python, full=full)
            for pair in ("lora", "full"):
                rows = {m: spawn(python, env, "comfy", folder, pair, m, args.images, args.steps,
                                   args.repeats, args.size)
                        for m in ("cfg", "finextract")}
                report(model, pair, rows, args.images)


if __name__ == "__main__":
    main()
