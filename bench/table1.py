"""Table 1 in miniature: Direct, CFG and FineXtract on full and LoRA fine-tunes of the miniature base.

``python -m finextract.bench.table1 [--quick] [--out DIR]``

For every concept set: fine-tune the shipped base (DreamBooth-style full fine-tune and LoRA,
:mod:`finextract.miniature.finetune`), then for each method generate N = 50·N0 images with the same
per-image seeds, cluster them into N0 (:func:`finextract.clustering.extract`) and score the central
images against the training set (AS, A-ESR@0.6/0.7, Eq. 1–2). A base-model control (Direct on the
pretrained model, same caption and seeds) shows what the score is without any fine-tune. Paper
defaults: w' = 3 (full) / 5 (LoRA), k = −0.02, CFG scale 3.

Prints per-set rows, means, the spread across sets and paired win counts (methods share seeds, so
compare them per set), and writes ``table1.json`` and ``table1.png`` (AS per method and kind).
``--quick``: two concept sets, shorter fine-tunes and fewer DDIM steps.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import time

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..clustering import evaluate, load_descriptor
from ..miniature import dataset, finetune
from ..miniature.demo import extract_images
from ..miniature.model import load_pipeline
from ..miniature.train import BASE_CHECKPOINT

METHODS = ("direct", "cfg", "finextract")


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run_set(base, name: str, descriptor, n_per_image: int, ddim_steps: int, ft_steps: int, lora_steps: int,
            seed: int, cfg_scale: float, k: float, ft_lr: float, lora_lr: float, lora_rank: int) -> dict:
    images, caption = dataset.concept_set(name)
    n0 = len(images)
    n = n_per_image * n0
    train_desc = descriptor.embed(images)
    t = time.monotonic()
    models = {"full": (finetune.dreambooth(base, images, caption, steps=ft_steps, lr=ft_lr, seed=seed), 3.0)}
    lora = finetune.train_lora(base, images, caption, steps=lora_steps, rank=lora_rank, alpha=lora_rank,
                               lr=lora_lr, seed=seed)
    models["lora"] = (finetune.with_unet(base, finetune.merge_lora(base.unet, lora)), 5.0)
    out = {"caption": caption, "n0": n0, "n": n, "finetune_seconds": round(time.monotonic() - t, 1)}
    _log(f"{name}: fine-tunes done in {out['finetune_seconds']} s")

    def score(model, base_model, method, w, kk, label):
        t0 = time.monotonic()
        _, ex = extract_images(model, base_model, caption, n0, n, method, w, kk, ddim_steps, seed, descriptor, label)
        desc = ex.descriptors[[ex.candidates.index(i) for i in ex.result.indices]]
        raw = evaluate(train_desc, desc)["raw"]
        return {"AS": raw["AS"], "A-ESR@0.6": raw["A-ESR"]["0.6"], "A-ESR@0.7": raw["A-ESR"]["0.7"],
                "best_score": raw["best_score"], "seconds": round(time.monotonic() - t0, 1)}

    out["base_control"] = score(base, None, "direct", 1.0, 0.0, f"{name} base control")
    for kind, (model, w_fx) in models.items():
        out[kind] = {
            "direct": score(model, None, "direct", 1.0, 0.0, f"{name} {kind} direct"),
            "cfg": score(model, None, "cfg", cfg_scale, 0.0, f"{name} {kind} cfg"),
            "finextract": score(model, base, "finextract", w_fx, k, f"{name} {kind} finextract"),
        }
        _log(f"{name} {kind}: " + "  ".join(f"{m} AS {out[kind][m]['AS']:.3f}" for m in METHODS)
             + f"  (base control {out['base_control']['AS']:.3f})")
    return out


def summarise(per_set: dict) -> dict:
    """Means and spread over sets, and paired wins (same seeds per set)."""
    names = list(per_set)
    summary = {"base_control_AS": float(np.mean([per_set[s]["base_control"]["AS"] for s in names]))}
    for kind in ("full", "lora"):
        block = {}
        for m in METHODS:
            for metric in ("AS", "A-ESR@0.6", "A-ESR@0.7"):
                vals = [per_set[s][kind][m][metric] for s in names]
                block.setdefault(m, {})[metric] = float(np.mean(vals))
                block[m][metric + "_std"] = float(np.std(vals))
        wins = {}
        for a, b in (("finextract", "cfg"), ("cfg", "direct"), ("finextract", "direct")):
            d = [per_set[s][kind][a]["AS"] - per_set[s][kind][b]["AS"] for s in names]
            wins[f"{a}>{b}"] = {"sets_won": int(sum(x > 0 for x in d)), "sets": len(d),
                                "mean_gap": float(np.mean(d))}
        block["paired"] = wins
        summary[kind] = block
    return summary


def plot(summary: dict, path: pathlib.Path) -> None:
    """Bar chart of mean AS (± std over sets) per method and fine-tune kind, PIL only."""
    w, h, pad = 560, 320, 40
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    d.line([pad, h - pad, w - 10, h - pad], fill="black")
    d.line([pad, 10, pad, h - pad], fill="black")
    for v in (0.2, 0.4, 0.6, 0.8, 1.0):
        y = h - pad - v * (h - pad - 20)
        d.line([pad - 4, y, w - 10, y], fill=(220, 220, 220))
        d.text((5, y - 6), f"{v:.1f}", fill="black", font=font)
    colours = {"direct": (150, 150, 150), "cfg": (70, 130, 200), "finextract": (220, 90, 40)}
    x = pad + 20
    for kind in ("full", "lora"):
        for m in METHODS:
            v, s = summary[kind][m]["AS"], summary[kind][m]["AS_std"]
            top = h - pad - v * (h - pad - 20)
            d.rectangle([x, top, x + 40, h - pad], fill=colours[m])
            err = s * (h - pad - 20)
            d.line([x + 20, top - err, x + 20, top + err], fill="black", width=2)
            d.text((x, h - pad + 4), m[:6], fill="black", font=font)
            x += 50
        d.text((x - 140, h - pad + 18), f"{kind} fine-tune", fill="black", font=font)
        x += 40
    y = h - pad - summary["base_control_AS"] * (h - pad - 20)
    d.line([pad, y, w - 10, y], fill=(0, 150, 0), width=1)
    d.text((w - 150, y - 14), "base-model control", fill=(0, 150, 0), font=font)
    d.text((pad + 5, 2), "mean AS over concept sets (SSCD), ± std", fill="black", font=font)
    img.save(path)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m finextract.bench.table1", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="two concept sets, shorter fine-tunes, fewer DDIM steps")
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("bench-table1"))
    p.add_argument("--sets", nargs="*", help="concept sets (default: all; --quick: the first two)")
    p.add_argument("--n-per-image", type=int, default=50, help="N / N0 (paper: 50)")
    p.add_argument("--ddim-steps", type=int, default=None)
    p.add_argument("--ft-steps", type=int, default=None, help="full fine-tune steps (paper: 200·N0)")
    p.add_argument("--lora-steps", type=int, default=None)
    p.add_argument("--ft-lr", type=float, default=1e-4)
    p.add_argument("--lora-lr", type=float, default=1e-3)
    p.add_argument("--lora-rank", type=int, default=16)
    p.add_argument("--cfg-scale", type=float, default=3.0)
    p.add_argument("--k", type=float, default=-0.02)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    sets = a.sets or (list(dataset.CONCEPT_NAMES[:2]) if a.quick else list(dataset.CONCEPT_NAMES))
    ddim_steps = a.ddim_steps or (10 if a.quick else 25)
    ft_steps = a.ft_steps or (100 * dataset.N0 if a.quick else 200 * dataset.N0)
    lora_steps = a.lora_steps or ft_steps
    base = load_pipeline(BASE_CHECKPOINT)
    descriptor = load_descriptor()
    config = {k: v for k, v in vars(a).items() if k != "out"}
    config.update(sets=sets, ddim_steps=ddim_steps, ft_steps=ft_steps, lora_steps=lora_steps,
                  w_full=3.0, w_lora=5.0, descriptor=descriptor.name)
    _log(f"table1: {config}")
    start = time.monotonic()
    per_set = {name: run_set(base, name, descriptor, a.n_per_image, ddim_steps, ft_steps, lora_steps, a.seed,
                             a.cfg_scale, a.k, a.ft_lr, a.lora_lr, a.lora_rank) for name in sets}
    summary = summarise(per_set)
    result = {"config": config, "summary": summary, "per_set": per_set,
              "seconds": round(time.monotonic() - start, 1)}
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "table1.json").write_text(json.dumps(result, indent=2))
    plot(summary, a.out / "table1.png")
    print(f"\nTable 1 in miniature ({len(sets)} concept sets, N = {a.n_per_image}·N0, {ddim_steps} DDIM steps)")
    print(f"{'kind':6s} {'method':11s} {'AS':>12s} {'A-ESR@0.6':>10s} {'A-ESR@0.7':>10s}")
    for kind in ("full", "lora"):
        for m in METHODS:
            r = summary[kind][m]
            print(f"{kind:6s} {m:11s} {r['AS']:.3f} ±{r['AS_std']:.3f} {r['A-ESR@0.6']:10.2f} {r['A-ESR@0.7']:10.2f}")
        for pair, v in summary[kind]["paired"].items():
            print(f"       {pair}: won {v['sets_won']}/{v['sets']} sets, mean AS gap {v['mean_gap']:+.3f}")
    print(f"base-model control AS {summary['base_control_AS']:.3f}")
    print(f"wrote {a.out / 'table1.json'} and {a.out / 'table1.png'} ({result['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
