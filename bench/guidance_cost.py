"""What model guidance costs next to CFG: time per image and peak memory, FineXtract ÷ CFG.

    python -m finextract.bench.guidance_cost [--images 2] [--steps 6] [--size 128] [--full]

Both methods need two model evaluations per step, so FineXtract should cost what CFG costs
(targets: time ≤ 1.05×; a base + LoRA pair's peak memory ≤ 1.05×). Rows:

- ``tiny``: a small plain-torch denoiser (100 M parameters, no ComfyUI): CFG on LoRA-merged weights
  against FineXtract with the masked LoRA branch of :mod:`..sampling.lora_branch`; and a full
  fine-tune pair (two models);
- ``comfy`` (when :func:`..host.comfyui_path` finds ComfyUI): a random-weight SD1.5-architecture model built with
  ComfyUI's own classes (shrunk UNet; ``--full`` adds the full 860 M-parameter UNet), sampled through
  the real :class:`..nodes.guider.ModelGuidanceGuider`, with a rank-16 LoRA on every transformer
  linear layer, and with a full fine-tuned checkpoint.

Time: both methods in ONE process, runs interleaved, steady-state seconds per step (from the
sampler's step callbacks: loading, weight patching and the first step excluded), fastest of
``--repeats``. Memory: each method in its own fresh process, resident high-water mark (Linux
``VmHWM``) over a sampling run after a warm-up run: weights, patched copies and activations count,
loading does not. ComfyUI workers run under ``$COMFYUI_PYTHON`` (default: this interpreter).
The benchmark imports ComfyUI through :mod:`..host` (only for the ``comfy`` rows, in worker processes).
"""
from __future__ import annotations

import argparse
import copy
import json
import pathlib
import subprocess
import sys
import tempfile
import time

import torch

from .. import host
from ..sampling import guided_denoised
from ..sampling.lora_branch import LowRankDelta, MaskedBranches
from . import test_fixture
METHODS = ("cfg", "finextract")


def reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def step_seconds(run) -> float:
    """Steady-state seconds per step of ``run(on_step)``: first to last step end."""
    marks = []
    run(lambda *_: marks.append(time.perf_counter()))
    return (marks[-1] - marks[0]) / (len(marks) - 1)


def measure(mode: str, setups: dict, repeats: int) -> dict:
    """``time``: every method in this process, runs interleaved so the shared machine's drifting
    load hits each alike, fastest kept; ``memory``: one method, high-water mark of a run after a
    warm-up run."""
    if mode == "time":
        times = {m: [] for m in setups}
        for _ in range(repeats):
            for m, run in setups.items():
                times[m].append(step_seconds(run))
        return {m: min(t) for m, t in times.items()}
    (run,) = setups.values()
    run(lambda *_: None)
    reset_peak()
    run(lambda *_: None)
    return {"peak_bytes": peak_bytes()}


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


@torch.no_grad()
def tiny_setup(pair: str, method: str, images: int, steps: int, rank: int = 16):
    """A sampling run of the tiny model: CFG on merged weights (as a host merges a LoRA),
    FineXtract with the masked branch, or for a full fine-tune two separate models."""
    torch.manual_seed(0)
    dim, tokens = 1024, 16
    base = TinyDenoiser(dim)
    lora = {m: [LowRankDelta(torch.randn(m.out_features, rank) * 0.01,
                             torch.randn(rank, m.in_features) / m.in_features ** 0.5, 1.0)]
            for m in base.modules() if isinstance(m, torch.nn.Linear)}
    branches = None
    if pair == "lora" and method == "cfg":
        for m, (d,) in lora.items():
            m.weight += d.scale * d.up @ d.down
        models = {"ft": base}
    elif pair == "lora":
        models, branches = {"ft": base}, MaskedBranches(lora)
    else:
        ft = copy.deepcopy(base)
        for m in ft.modules():
            if isinstance(m, torch.nn.Linear):
                m.weight += 0.01 * torch.randn_like(m.weight)
        models = {"ft": ft} if method == "cfg" else {"ft": ft, "base": base}
        del ft
    del base, lora
    cond, empty = torch.full((dim,), 0.1), torch.zeros(dim)
    x0 = torch.randn(images, tokens, dim)

    @torch.no_grad()
    def run(on_step):
        x = x0.clone()
        for i in range(steps):
            if "base" in models:  # two models: each runs its half
                out = [models["ft"](x, cond), models["base"](x, empty)]
            else:  # one batched [cond, uncond] forward, as hosts do for CFG
                inp, c = torch.cat([x, x]), torch.cat([cond.expand_as(x), empty.expand_as(x)])
                if branches is not None:
                    with branches.installed(), branches.selecting(range(images), 2 * images, x.device):
                        out = models["ft"](inp, c).chunk(2)
                else:
                    out = models["ft"](inp, c).chunk(2)
            denoised = guided_denoised(method, x, 1.0, out[0], out[1], 5.0, -0.02)
            x = x + (denoised - x) / (steps - i)
            on_step()

    return run


# --- ComfyUI, SD1.5 architecture ------------------------------------------------------------

def comfy_setups(folder: str, pair: str, methods: list, images: int, steps: int, size: int) -> dict:
    host.import_comfyui(cpu=True)
    samplers, folder_paths = host.module("comfy.samplers"), host.module("folder_paths")
    from ..nodes.guider import ModelGuidanceGuider
    from ..nodes.pair import load_pair

    folder = pathlib.Path(folder)
    folder_paths.add_model_folder_path("checkpoints", str(folder / "checkpoints"))
    folder_paths.add_model_folder_path("loras", str(folder / "loras"))
    files = test_fixture("host/sd15_models").manifest(folder)
    base = files["checkpoints"]["base"]["file"]
    if pair == "lora":
        loaded = load_pair(base, None, [(files["loras"]["attention"], 1.0)])
    else:
        loaded = load_pair(base, files["checkpoints"]["finetuned"]["file"], [])
    positive = loaded.clip.encode_from_tokens_scheduled(loaded.clip.tokenize("a photo of sks dog"))
    negative = loaded.base_clip.encode_from_tokens_scheduled(loaded.base_clip.tokenize(""))
    noise = torch.randn(images, 4, size // 8, size // 8, generator=torch.Generator().manual_seed(0))
    setups = {}
    for method in methods:
        guider = ModelGuidanceGuider(loaded.base, loaded.finetuned, method, 5.0 if pair == "lora" else 3.0, -0.02)
        guider.set_conds(positive, negative)
        sigmas = samplers.calculate_sigmas(guider.model_patcher.get_model_object("model_sampling"), "normal", steps)

        def run(on_step, guider=guider, sigmas=sigmas):
            guider.sample(noise, torch.zeros_like(noise), samplers.sampler_object("euler"), sigmas,
                          callback=on_step, disable_pbar=True, seed=0)
        setups[method] = run
    del loaded
    return setups


# --- the run ----------------------------------------------------------------------------------

def spawn(python: str, env: dict, args, *worker_args) -> dict:
    cmd = [python, "-m", "finextract.bench.guidance_cost", "--threads", str(args.threads),
           "--images", str(args.images), "--steps", str(args.steps), "--size", str(args.size),
           "--repeats", str(args.repeats), "--worker", *map(str, worker_args)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {worker_args} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def compare(python: str, env: dict, args, model: str, pair: str, *extra):
    """Two table rows: times interleaved in one process, memory in one process per method."""
    times = spawn(python, env, args, "time", model, pair, ",".join(METHODS), *extra)
    memory = {m: spawn(python, env, args, "memory", model, pair, m, *extra)["peak_bytes"] for m in METHODS}
    for m in METHODS:
        print(f"{model:6s} {pair:5s} {m:11s} {times[m] * args.steps / args.images:8.3f} s/image "
              f"{memory[m] / 2**20:8.0f} MiB peak | vs cfg: time x{times[m] / times['cfg']:.3f} "
              f"memory x{memory[m] / memory['cfg']:.3f}", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--size", type=int, default=128, help="image size of the ComfyUI rows, px")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per method (fastest kept)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads per worker (default 1: on a shared machine more "
                             "threads make every small kernel wait for descheduled workers, which "
                             "measures the neighbours rather than the method)")
    parser.add_argument("--full", action="store_true", help="also the full-size SD1.5 UNet (~12 GB RAM)")
    parser.add_argument("--skip-tiny", action="store_true")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        torch.set_num_threads(args.threads)
        mode, kind, pair, methods, *rest = args.worker
        methods = methods.split(",")
        if kind == "tiny":
            setups = {m: tiny_setup(pair, m, args.images, args.steps) for m in methods}
        else:
            setups = comfy_setups(rest[0], pair, methods, args.images, args.steps, args.size)
        print(json.dumps(measure(mode, setups, args.repeats)))
        return
    print(f"FineXtract vs CFG: {args.images} images x {args.steps} steps, CPU, torch {torch.__version__}, "
          f"{args.threads} thread(s) per worker", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        env = host.pack_env(tmp)
        if not args.skip_tiny:
            print("tiny: 100 M-parameter MLP denoiser, LoRA = rank 16 on every linear layer", flush=True)
            for pair in ("lora", "full"):
                compare(sys.executable, env, args, "tiny", pair)
        comfyui = host.comfyui_path()
        if comfyui is None:
            print("no ComfyUI (COMFYUI_PATH unset, no ../shared/comfyui): the ComfyUI SD1.5-architecture rows are skipped")
            return
        env["COMFYUI_PATH"] = str(comfyui)
        python = host.comfyui_python()
        for full in (False, True)[: 2 if args.full else 1]:
            folder = test_fixture("host/sd15_models").model_folder(comfyui, python, full=full)
            print(f"comfy: {'full' if full else 'shrunk'} SD1.5-architecture UNet, {args.size} px, "
                  "LoRA = rank 16 on every transformer linear layer", flush=True)
            for pair in ("lora", "full"):
                compare(python, env, args, "comfy", pair, folder)


if __name__ == "__main__":
    main()
