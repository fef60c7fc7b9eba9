"""Calibration of the miniature world: how much does a fine-tune memorise, and is the base clean?

Three commands, each printing a table and writing JSON (``--out``):

- ``python -m finextract.bench.calibration curve`` — the **memorisation curve**: for a full
  (DreamBooth-style) fine-tune and a LoRA of one concept set (``--kinds two-stage``: a textual
  inversion of the trigger, then a full fine-tune), after each of ``--checkpoints``
  fine-tune steps, N = 50·N0 Direct samples (fine-tuned model, training caption, no guidance) are
  scored against the training images: best-of-N SSCD per training image, then the paper's
  clustering to N0 images and AS / A-ESR@0.6 / @0.7. Every later comparison (Table 1 …) is read
  against this curve: it says where memorisation is absent, partial and saturated. The last full
  fine-tune point is the bar "a long fine-tune memorises" (A-ESR@0.7 ≥ 0.8).
- ``python -m finextract.bench.calibration control`` — the **control**: the base model sampled
  with each concept set's caption (Direct, N = 50·N0), scored against that set's images; the bar
  is max SSCD < 0.5 and AS ≤ 0.3 for every set (the base never saw them, so nothing may match).

- ``python -m finextract.bench.calibration base`` — the **base itself**: how cleanly it denoises
  (SDEdit: crops of the six scikit-image pretraining photos noised to t = 100 / 300 and
  brought back with 10 DDIM steps; RMS pixel error and SSCD to the crop), whether its samples
  show the photo their caption names (two per pretraining caption, Direct and CFG 3; the source
  of the nearest shipped crop by SSCD content and by colour layout, chance 1/36) and whether its
  unconditional branch, the one Eq. 13 divides out, lies near its world (median colour distance
  of 12 "" samples against that of the unseen concept photos).

One fine-tune run per kind serves every checkpoint (the evaluation samples from the weights as they
are at that step); image i of every evaluation uses the same seed, so points differ only by the
fine-tune. 1 intra-op thread by default (``--threads``), as the demo runs.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import time

import numpy as np
import torch

from ..clustering import evaluate, load_descriptor
from ..miniature import dataset, finetune, reference
from ..miniature.ddim import sample_latents
from ..miniature.demo import image_grid, extract_images
from ..miniature.model import MiniPipeline, load_pipeline
from ..miniature.train import BASE_CHECKPOINT
from . import regime

TAUS = (0.6, 0.7)


def score_samples(pipe: MiniPipeline, caption: str, train_desc: torch.Tensor, descriptor, n: int,
                  ddim_steps: int, seed: int = 0, label: str = "Direct") -> dict:
    """Direct samples of ``pipe`` (the demo's sampling and clustering): best-of-N SSCD per training
    image and the clustered N0 images' AS / A-ESR."""
    images, ex = extract_images(pipe, None, caption, len(train_desc), n, "direct", 1.0, 0.0, ddim_steps, seed,
                                descriptor, label)
    best_of_n = (train_desc @ ex.descriptors.T).max(dim=1).values
    raw = evaluate(train_desc, ex.extracted_descriptors(), TAUS)["raw"]
    return {"best_of_n": [round(v, 4) for v in best_of_n.tolist()], "best_of_n_max": round(best_of_n.max().item(), 4),
            "AS": round(raw["AS"], 4), **{f"A-ESR@{t}": raw["A-ESR"][f"{t:g}"] for t in TAUS},
            "extracted": images[ex.result.indices]}


def curve(base: MiniPipeline, concept: str, kind: str, checkpoints: list[int], n: int, ddim_steps: int,
          lr: float, rank: int, targets: str, descriptor, seed: int = 0, save: pathlib.Path | None = None,
          state: pathlib.Path | None = None, resume: bool = False,
          inversion_steps: int = regime.INVERSION["steps"], **recipe) -> list[dict]:
    """The memorisation curve of one fine-tune kind (``full``, ``lora`` or ``two-stage``: a textual
    inversion of ``inversion_steps``, then the full fine-tune the curve counts) on ``concept``; with
    ``save``, the LoRA at the curve's end is written there in kohya format (how the shipped demo
    LoRA is made: its own curve is printed on the way). ``state``: the fine-tune and the rows so
    far are saved there every ~10 minutes; ``resume`` continues a run from it (a curve of hours
    survives interruption and ends as an uninterrupted one)."""
    images, caption = dataset.concept_set(concept)
    train_desc = descriptor.embed(images)
    rows, start = [], time.monotonic()
    wanted = set(checkpoints)
    if state is not None:
        identity = {"concept": concept, "kind": kind, "steps": max(checkpoints), "lr": lr, "seed": seed,
                    **({"rank": rank, "targets": targets} if kind == "lora" else {}),
                    **({"inversion_steps": inversion_steps} if kind == "two-stage" else {}), **recipe}
        recipe["checkpoint"] = finetune.TrainingCheckpoint(state, identity, resume=resume, extra=lambda: {"rows": rows})
        rows += recipe["checkpoint"].saved["rows"] if recipe["checkpoint"].saved else []

    frame = base  # the text encoder the fine-tuned UNet is read with (two-stage: the inverted trigger's)
    if kind == "two-stage":
        frame = finetune.invert_token(base, images, caption, regime.trigger(caption), inversion_steps,
                                      regime.INVERSION["lr"], seed,
                                      **{k: v for k, v in recipe.items() if k != "checkpoint"})

    def on_step(step: int, unet) -> None:
        if step not in wanted:
            return
        tuned = finetune.with_unet(frame, unet)
        t0 = time.monotonic()
        with torch.no_grad():
            row = score_samples(tuned, caption, train_desc, descriptor, n, ddim_steps, seed, f"{kind} step {step}")
        unet.train()
        row.update(kind=kind, concept=concept, steps=step, sample_seconds=round(time.monotonic() - t0, 1),
                   elapsed=round(time.monotonic() - start, 1))
        rows.append(row)
        print(f"  {kind:4s} {concept:9s} step {step:5d}: best-of-N max {row['best_of_n_max']:.3f} "
              f"(per image {' '.join(f'{v:.2f}' for v in row['best_of_n'])})  clustered AS {row['AS']:.3f} "
              f"A-ESR@0.6 {row['A-ESR@0.6']:.1f} @0.7 {row['A-ESR@0.7']:.1f}  ({row['sample_seconds']:.0f} s)",
              flush=True)
    if kind in ("full", "two-stage"):  # two-stage's second stage is a full fine-tune (seed + 1, as two_stage)
        finetune.dreambooth(frame, images, caption, steps=max(checkpoints), lr=lr,
                            seed=seed + (kind == "two-stage"), on_step=on_step, **recipe)
    else:
        tensors = finetune.train_lora(base, images, caption, steps=max(checkpoints), rank=rank, alpha=float(rank),
                                      lr=lr, seed=seed, targets=targets, on_step=on_step, **recipe)
        if save is not None:
            finetune.save_lora(save, tensors, finetune.lora_metadata(concept, caption, len(images), rank, float(rank),
                                                                     targets, max(checkpoints)))
            print(f"  wrote {save}")
    return rows


def control(base: MiniPipeline, concepts: list[str], n: int, ddim_steps: int, descriptor) -> list[dict]:
    """The base model on every concept caption (Direct): nothing may match images it never saw."""
    rows = []
    for concept in concepts:
        images, caption = dataset.concept_set(concept)
        row = score_samples(base, caption, descriptor.embed(images), descriptor, n, ddim_steps,
                            label=f"control {concept}")
        row.update(concept=concept, caption=caption)
        rows.append(row)
        print(f"  control {concept:9s} {caption!r:30s}: best-of-N max {row['best_of_n_max']:.3f}  "
              f"clustered AS {row['AS']:.3f}  A-ESR@0.6 {row['A-ESR@0.6']:.1f}", flush=True)
    return rows


@torch.no_grad()
def base_quality(base: MiniPipeline, descriptor, steps: int) -> tuple[dict, np.ndarray]:
    """The ``base`` command's numbers (module docstring) and its sheet: SDEdit inputs and outputs
    at t = 100, then the CFG-3 samples, two per pretraining caption in caption order."""
    row, sheet = {}, []
    sources = tuple(s for s in dataset.PRETRAINING_SOURCES if s.location.startswith("skimage:"))
    crops = dataset.pretraining_set(2, sources=sources)[0]
    x0, a = base.encode(torch.from_numpy(crops)), base.alphas_cumprod
    context = base.encode_text([dataset.caption_of(s) for s in sources for _ in range(2)])
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    for t_start in (100, 300):
        ts = torch.linspace(t_start, 0, 11).round().long().tolist()
        x = a[t_start].sqrt() * x0 + (1 - a[t_start]).sqrt() * noise
        for t, t_next in zip(ts, ts[1:] + [None]):
            eps = base.eps(x, t, context)
            a_next = a[t_next] if t_next is not None else torch.tensor(1.0)
            x = a_next.sqrt() * (x - (1 - a[t]).sqrt() * eps) / a[t].sqrt() + (1 - a_next).sqrt() * eps
        out = base.decode(x).numpy()
        similarity = (descriptor.embed(out).numpy() * descriptor.embed(crops).numpy()).sum(axis=1)
        row[f"sdedit_t{t_start}"] = {"rms": float(np.sqrt(((out - crops) ** 2).mean())),
                                     "sscd_to_crop": float(similarity.mean())}
        if t_start == 100:
            sheet += [crops, out]
    captions = reference.load()[2]
    truth = np.repeat(np.arange(len(captions)), 2)
    for method, w in (("direct", 1.0), ("cfg", 3.0)):
        images = base.decode(torch.cat([sample_latents(base, None, c, method, range(2), seed=7, steps=steps, w=w)
                                        for c in captions])).numpy()
        found = reference.nearest_sources(images, descriptor)
        row[f"hits_{method}"] = {k: float((found[k] == truth).mean()) for k in ("content", "colour")}
        if method == "cfg":
            sheet += [images[i:i + 12] for i in range(0, len(images), 12)]
    uncond = base.decode(sample_latents(base, None, "", "direct", range(12), seed=7, steps=steps)).numpy()
    unseen = np.concatenate([dataset.concept_set(n)[0] for n in dataset.CONCEPT_NAMES])
    row["uncond_median_distance"] = float(np.median(reference.nearest_sources(uncond, descriptor)["colour_distance"]))
    row["unseen_median_distance"] = float(np.median(reference.nearest_sources(unseen, descriptor)["colour_distance"]))
    return row, sheet


def _sheet(rows: list[dict], path: pathlib.Path, training: np.ndarray | None = None) -> None:
    """Extracted images of each row (training images first when given), as the demo's grid."""
    image_grid(([training] if training is not None else []) + [r["extracted"] for r in rows]).save(path)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m finextract.bench.calibration", description=__doc__.split("\n")[0])
    p.add_argument("command", choices=("curve", "control", "base"))
    p.add_argument("--base", type=pathlib.Path, default=BASE_CHECKPOINT)
    p.add_argument("--concepts", default="dog", help="comma-separated concept sets (control: 'all')")
    p.add_argument("--kinds", default="full,lora", help="comma-separated: full, lora, two-stage")
    p.add_argument("--inversion-steps", type=int, default=regime.INVERSION["steps"],
                   help="two-stage: textual-inversion steps before the full fine-tune the curve counts")
    p.add_argument("--checkpoints", default="100,250,500,1000,2000,4000")
    p.add_argument("--n", type=int, default=None, help="samples per point (default 50·N0)")
    p.add_argument("--ddim-steps", type=int, default=20)
    p.add_argument("--lr-full", type=float, default=1e-4)
    p.add_argument("--lr-lora", type=float, default=finetune.DEMO_LORA["lr"])
    p.add_argument("--rank", type=int, default=finetune.DEMO_LORA["rank"])
    p.add_argument("--targets", default=finetune.DEMO_LORA["targets"], choices=sorted(finetune.LORA_TARGETS))
    p.add_argument("--batch", type=int, default=1, help="fine-tune images per step (paper: 1)")
    p.add_argument("--low-t-fraction", type=float, default=0.0)
    p.add_argument("--lr-floor", type=float, default=None, help="cosine decay of the fine-tune lr to this fraction")
    p.add_argument("--save-lora", type=pathlib.Path, default=None, help="write the LoRA at the curve's end here")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("out/calibration"))
    p.add_argument("--resume", action="store_true",
                   help="curve: continue the runs saved under --out (state_<concept>_<kind>.pt, every ~10 min)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    base = load_pipeline(a.base)
    descriptor = load_descriptor()
    n = a.n or 50 * dataset.N0
    concepts = list(dataset.CONCEPT_NAMES) if a.concepts == "all" else a.concepts.split(",")
    a.out.mkdir(parents=True, exist_ok=True)
    settings = {k: (str(v) if isinstance(v, pathlib.Path) else v) for k, v in vars(a).items()}
    if a.command == "base":
        row, sheet = base_quality(base, descriptor, a.ddim_steps)
        print(f"base {a.base}: SDEdit t=100 RMS {row['sdedit_t100']['rms']:.4f} (SSCD to the crop "
              f"{row['sdedit_t100']['sscd_to_crop']:.3f}), t=300 {row['sdedit_t300']['rms']:.4f} "
              f"({row['sdedit_t300']['sscd_to_crop']:.3f})")
        for method in ("direct", "cfg"):
            hits = row[f"hits_{method}"]
            print(f"  {method:6s} samples show their caption's photo: by content {hits['content']:.3f}, by colour "
                  f"layout {hits['colour']:.3f} (chance {1 / len(dataset.PRETRAINING_SOURCES):.3f})")
        print(f"  unconditional: median colour distance {row['uncond_median_distance']:.3f} "
              f"(unseen photos {row['unseen_median_distance']:.3f})")
        image_grid(sheet).save(a.out / "base.png")
        rows = [row]
    elif a.command == "control":
        print(f"control: base {a.base}, N = {n}, {a.ddim_steps} DDIM steps")
        rows = control(base, concepts, n, a.ddim_steps, descriptor)
        worst = max(r["best_of_n_max"] for r in rows)
        worst_as = max(r["AS"] for r in rows)
        print(f"bar (max SSCD < 0.5 and AS <= 0.3 on every set): max {worst:.3f}, AS {worst_as:.3f} -> "
              f"{'holds' if worst < 0.5 and worst_as <= 0.3 else 'FAILS'}")
        _sheet(rows, a.out / "control.png")
    else:
        rows = []
        checkpoints = sorted(int(c) for c in a.checkpoints.split(","))
        for concept in concepts:
            for kind in a.kinds.split(","):
                print(f"curve: {kind} fine-tune of {concept!r}, N = {n}, {a.ddim_steps} DDIM steps")
                lr = a.lr_lora if kind == "lora" else a.lr_full
                part = curve(base, concept, kind, checkpoints, n, a.ddim_steps, lr, a.rank, a.targets, descriptor,
                             save=a.save_lora if kind == "lora" else None,
                             state=a.out / f"state_{concept}_{kind}.pt", resume=a.resume,
                             inversion_steps=a.inversion_steps,
                             batch=a.batch, low_t_fraction=a.low_t_fraction, lr_floor=a.lr_floor)
                _sheet(part, a.out / f"curve_{concept}_{kind}.png", dataset.concept_set(concept)[0])
                rows += part
        for kind in a.kinds.split(","):
            last = [r for r in rows if r["kind"] == kind and r["steps"] == checkpoints[-1]]
            print(f"end of the {kind} curve: A-ESR@0.7 " + ", ".join(f"{r['concept']} {r['A-ESR@0.7']:.1f}" for r in last)
                  + ("  (bar for full: >= 0.8)" if kind == "full" else ""))
    for r in rows:
        r.pop("extracted", None)
    path = a.out / f"{a.command}.json"
    path.write_text(json.dumps({"settings": settings, "rows": rows}, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
