"""Table 1 in miniature: Direct, CFG and FineXtract on full and LoRA fine-tunes of the miniature base.

``python -m finextract.bench.table1 [--quick] [--out DIR]``

For every concept set: fine-tune the shipped base (DreamBooth-style full fine-tune and LoRA,
:mod:`finextract.miniature.finetune`), then for each method generate N = 50·N0 images with the same
per-image seeds, cluster them into N0 (:func:`finextract.clustering.extract`) and score the central
images against the training set (AS, A-ESR@0.6/0.7, Eq. 1–2). A base-model control (Direct on the
pretrained model, same caption and seeds) shows what the score is without any fine-tune. Paper
defaults: w' = 3 (full) / 5 (LoRA), k = −0.02, CFG scale 3.

Also, unless ``--no-extras``:
- A-ESR and AS vs N (Fig. 4b): the FineXtract run of the full fine-tune re-clustered on its first
  N = m·N0 images (images have per-image seeds, so they *are* the m·N0-image run): no new sampling;
  and the same N = 50·N0 descriptors clustered in faithful mode beside the default fast mode;
- defences (Table 4): FineXtract on full fine-tunes trained with Cutout and with RandAugment, at
  N = ``--defence-n-per-image``·N0, paired with the undefended run's first that many images;
- w′ and k sweeps (Fig. 6) of FineXtract on the full fine-tune, at N = ``--sweep-n-per-image``·N0.

Prints per-set rows, means, the spread across sets and paired win counts (methods share seeds, so
compare them per set), and writes ``table1.json``, ``table1.png`` (AS per method and kind) and
``table1_extras.png``. ``--quick``: two concept sets, shorter fine-tunes and fewer DDIM steps, defences
at 10·N0, faithful clustering capped at 10 s per threshold (~12 min with ``--jobs 2`` on 2 cores).
``--jobs 2`` runs concept sets in two processes (results do not depend on it).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import pathlib
import time

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..clustering import cluster, evaluate, load_descriptor
from ..miniature import dataset, finetune
from ..miniature.demo import extract_images
from ..miniature.model import load_pipeline
from ..miniature.train import BASE_CHECKPOINT

METHODS = ("direct", "cfg", "finextract")
N_PER_IMAGE = (1, 5, 10, 25, 50)
"""N / N0 of the A-ESR-vs-N curve (Fig. 4b)."""
W_SWEEP = (1.0, 2.0, 3.0, 5.0, 7.0)
K_SWEEP = (0.0, -0.02, -0.05, -0.1)
"""Fig. 6: w′ at k = −0.02, and k at w′ = 3, FineXtract on the full fine-tune."""
DEFENCES = ("cutout", "randaugment")


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _metrics(train_desc, desc) -> dict:
    raw = evaluate(train_desc, desc)["raw"]
    return {"AS": raw["AS"], "A-ESR@0.6": raw["A-ESR"]["0.6"], "A-ESR@0.7": raw["A-ESR"]["0.7"],
            "best_score": raw["best_score"]}


def _clustered(train_desc, desc, n0: int, mode: str = "fast", time_cap: float = 30.0) -> dict:
    """Cluster ``desc`` (all generated images, in image order) into ``n0`` and score the centres."""
    result = cluster(desc, n0, mode=mode, time_cap=time_cap)
    return {**_metrics(train_desc, desc[result.indices]), "seconds": round(result.seconds, 1),
            "capped_thresholds": result.capped_thresholds}


def run_set(base, name: str, descriptor, cfg: dict) -> dict:
    """Every number of one concept set (see the module docstring); ``cfg`` = the run's settings."""
    images, caption = dataset.concept_set(name)
    n0 = len(images)
    n = cfg["n_per_image"] * n0
    train_desc = descriptor.embed(images)
    seed, k = cfg["seed"], cfg["k"]

    def run(model, base_model, method, w, kk, label, count=n):
        """(scores, all descriptors in image order) of ``count`` images of ``method``."""
        t0 = time.monotonic()
        _, ex = extract_images(model, base_model, caption, n0, count, method, w, kk, cfg["ddim_steps"], seed,
                               descriptor, label)
        scores = _metrics(train_desc, ex.extracted_descriptors())
        return {**scores, "seconds": round(time.monotonic() - t0, 1)}, ex.descriptors

    def full_finetune(augment=None):
        return finetune.dreambooth(base, images, caption, steps=cfg["ft_steps"], lr=cfg["ft_lr"], seed=seed,
                                   augment=augment)

    t = time.monotonic()
    models = {"full": (full_finetune(), 3.0)}
    lora = finetune.train_lora(base, images, caption, steps=cfg["lora_steps"], rank=cfg["lora_rank"],
                               alpha=cfg["lora_rank"], lr=cfg["lora_lr"], seed=seed)
    models["lora"] = (finetune.with_unet(base, finetune.merge_lora(base.unet, lora)), 5.0)
    out = {"caption": caption, "n0": n0, "n": n, "finetune_seconds": round(time.monotonic() - t, 1)}
    _log(f"{name}: fine-tunes done in {out['finetune_seconds']} s")
    out["base_control"] = run(base, None, "direct", 1.0, 0.0, f"{name} base control")[0]
    fx_full_desc = None
    for kind, (model, w_fx) in models.items():
        out[kind] = {"direct": run(model, None, "direct", 1.0, 0.0, f"{name} {kind} direct")[0],
                     "cfg": run(model, None, "cfg", cfg["cfg_scale"], 0.0, f"{name} {kind} cfg")[0]}
        out[kind]["finextract"], desc = run(model, base, "finextract", w_fx, k, f"{name} {kind} finextract")
        fx_full_desc = desc if kind == "full" else fx_full_desc
        _log(f"{name} {kind}: " + "  ".join(f"{m} AS {out[kind][m]['AS']:.3f}" for m in METHODS)
             + f"  (base control {out['base_control']['AS']:.3f})")
    if not cfg["extras"]:
        return out
    full = models["full"][0]
    out["vs_n"] = {str(m): _clustered(train_desc, fx_full_desc[:m * n0], n0)
                   for m in N_PER_IMAGE if m <= cfg["n_per_image"]}
    out["faithful"] = _clustered(train_desc, fx_full_desc, n0, mode="faithful", time_cap=cfg["faithful_cap"])
    n_defence = cfg["defence_n_per_image"] * n0
    out["defences"] = {"none": (out["full"]["finextract"] if n_defence == n else
                                _clustered(train_desc, fx_full_desc[:n_defence], n0))}
    for defence in DEFENCES:
        out["defences"][defence] = run(full_finetune(finetune.AUGMENTATIONS[defence]), base, "finextract", 3.0, k,
                                       f"{name} full+{defence} finextract", n_defence)[0]
    n_sweep = cfg["sweep_n_per_image"] * n0
    out["w_sweep"] = {str(w): run(full, base, "finextract", w, k, f"{name} sweep w'={w}", n_sweep)[0]
                      for w in W_SWEEP}
    out["k_sweep"] = {str(kk): (out["w_sweep"]["3.0"] if kk == k else
                                run(full, base, "finextract", 3.0, kk, f"{name} sweep k={kk}", n_sweep)[0])
                      for kk in K_SWEEP}
    _log(f"{name} extras: AS vs N/N0 " + " ".join(f"{m}:{v['AS']:.3f}" for m, v in out["vs_n"].items())
         + "; defences " + " ".join(f"{d}:{v['AS']:.3f}" for d, v in out["defences"].items()))
    return out


def _worker(args):
    name, cfg = args
    torch.set_num_threads(1)
    return name, run_set(load_pipeline(BASE_CHECKPOINT), name, load_descriptor(), cfg)


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
    if "vs_n" in per_set[names[0]]:
        summary["extras"] = summarise_extras(per_set)
    return summary


def _mean_over_sets(per_set: dict, key: str, metric: str = "AS") -> dict[str, float]:
    """{setting: mean of ``metric`` over sets} for a per-set block ``key`` ({setting: scores})."""
    settings = per_set[next(iter(per_set))][key]
    return {x: float(np.mean([per_set[s][key][x][metric] for s in per_set])) for x in settings}


def summarise_extras(per_set: dict) -> dict:
    """Fig. 4b, Table 4 and Fig. 6 over sets: means, and the paired checks the issue asks for."""
    vs_n = {metric: _mean_over_sets(per_set, "vs_n", metric) for metric in ("AS", "A-ESR@0.6", "A-ESR@0.7")}
    as_by_n = list(vs_n["AS"].values())
    defences = _mean_over_sets(per_set, "defences")
    return {
        "vs_n": vs_n,
        "more_generations_do_not_hurt": bool(all(b >= a - 0.01 for a, b in zip(as_by_n, as_by_n[1:]))),
        "fast_vs_faithful_AS": {"fast": float(np.mean([per_set[s]["full"]["finextract"]["AS"] for s in per_set])),
                                "faithful": float(np.mean([per_set[s]["faithful"]["AS"] for s in per_set]))},
        "faithful_capped_thresholds": int(sum(per_set[s]["faithful"]["capped_thresholds"] for s in per_set)),
        "defences": defences,
        "defence_reduced_AS": {d: {"sets": len(per_set), "sets_reduced": int(sum(
            per_set[s]["defences"][d]["AS"] < per_set[s]["defences"]["none"]["AS"] for s in per_set))}
            for d in DEFENCES},
        "w_sweep": _mean_over_sets(per_set, "w_sweep"),
        "k_sweep": _mean_over_sets(per_set, "k_sweep"),
    }


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


def plot_extras(extras: dict, path: pathlib.Path) -> None:
    """Four small panels, mean AS over sets: vs N/N0, vs w′, vs k, per defence (PIL only)."""
    panels = [("AS vs N/N0 (Fig. 4b)", extras["vs_n"]["AS"]), ("AS vs w' (Fig. 6)", extras["w_sweep"]),
              ("AS vs k (Fig. 6)", extras["k_sweep"]), ("AS per defence (Table 4)", extras["defences"])]
    pw, ph, pad = 260, 200, 30
    img = Image.new("RGB", (pw * len(panels), ph), "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    for i, (title, values) in enumerate(panels):
        x0 = i * pw + pad
        d.text((x0, 4), title, fill="black", font=font)
        d.line([x0, ph - pad, x0 + pw - 2 * pad, ph - pad], fill="black")
        d.line([x0, 20, x0, ph - pad], fill="black")
        step = (pw - 2 * pad) / max(len(values), 1)
        for j, (label, v) in enumerate(values.items()):
            cx = x0 + step * (j + 0.5)
            top = ph - pad - v * (ph - pad - 24)
            d.rectangle([cx - step * 0.3, top, cx + step * 0.3, ph - pad], fill=(220, 90, 40))
            d.text((cx - step * 0.4, top - 12), f"{v:.2f}", fill="black", font=font)
            d.text((cx - step * 0.4, ph - pad + 4), label[:6], fill="black", font=font)
    img.save(path)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m finextract.bench.table1", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="two concept sets, shorter fine-tunes, fewer DDIM steps")
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("bench-table1"))
    p.add_argument("--sets", nargs="*", help="concept sets (default: all; --quick: the first two)")
    p.add_argument("--n-per-image", type=int, default=50, help="N / N0 (paper: 50)")
    p.add_argument("--ddim-steps", type=int, default=None,
                   help="DDIM steps per image (default 15, quick 10: the 90-min budget on 2 cores)")
    p.add_argument("--ft-steps", type=int, default=None, help="full fine-tune steps (paper: 200·N0)")
    p.add_argument("--lora-steps", type=int, default=None)
    p.add_argument("--ft-lr", type=float, default=1e-4)
    p.add_argument("--lora-lr", type=float, default=1e-3)
    p.add_argument("--lora-rank", type=int, default=16)
    p.add_argument("--cfg-scale", type=float, default=3.0)
    p.add_argument("--k", type=float, default=-0.02)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-extras", action="store_true", help="only the main table (no A-ESR vs N, defences, sweeps)")
    p.add_argument("--sweep-n-per-image", type=int, default=None, help="N / N0 of the w'/k sweeps (default 10; quick 5)")
    p.add_argument("--defence-n-per-image", type=int, default=None,
                   help="N / N0 of the Cutout/RandAugment runs (default: --n-per-image; quick 10)")
    p.add_argument("--faithful-cap", type=float, default=None,
                   help="faithful clustering's seconds per threshold (paper and default 30; quick 10)")
    p.add_argument("--jobs", type=int, default=1, help="concept sets run in this many processes (2 on 2 cores)")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    sets = a.sets or (list(dataset.SCIENCE_CONCEPTS[:2]) if a.quick else list(dataset.SCIENCE_CONCEPTS))
    ddim_steps = a.ddim_steps or (10 if a.quick else 15)
    ft_steps = a.ft_steps or (100 * dataset.N0 if a.quick else 200 * dataset.N0)
    descriptor_name = load_descriptor().name
    cfg = {k: v for k, v in vars(a).items() if k not in ("out", "no_extras", "jobs", "quick", "sets")}
    cfg.update(sets=sets, quick=a.quick, ddim_steps=ddim_steps, ft_steps=ft_steps, lora_steps=a.lora_steps or ft_steps,
               sweep_n_per_image=a.sweep_n_per_image or (5 if a.quick else 10), extras=not a.no_extras,
               defence_n_per_image=min(a.defence_n_per_image or (10 if a.quick else a.n_per_image), a.n_per_image),
               faithful_cap=a.faithful_cap or (10.0 if a.quick else 30.0),
               w_full=3.0, w_lora=5.0, descriptor=descriptor_name)
    _log(f"table1: {cfg} ({a.jobs} job(s))")
    start = time.monotonic()
    tasks = [(name, cfg) for name in sets]
    if a.jobs > 1:
        with multiprocessing.get_context("spawn").Pool(a.jobs) as pool:
            per_set = dict(pool.map(_worker, tasks, chunksize=1))
    else:
        per_set = dict(map(_worker, tasks))
    per_set = {name: per_set[name] for name in sets}
    summary = summarise(per_set)
    result = {"config": cfg, "summary": summary, "per_set": per_set,
              "seconds": round(time.monotonic() - start, 1)}
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "table1.json").write_text(json.dumps(result, indent=2))
    plot(summary, a.out / "table1.png")
    if "extras" in summary:
        plot_extras(summary["extras"], a.out / "table1_extras.png")
    print(f"\nTable 1 in miniature ({len(sets)} concept sets, N = {a.n_per_image}·N0, {ddim_steps} DDIM steps)")
    print(f"{'kind':6s} {'method':11s} {'AS':>12s} {'A-ESR@0.6':>10s} {'A-ESR@0.7':>10s}")
    for kind in ("full", "lora"):
        for m in METHODS:
            r = summary[kind][m]
            print(f"{kind:6s} {m:11s} {r['AS']:.3f} ±{r['AS_std']:.3f} {r['A-ESR@0.6']:10.2f} {r['A-ESR@0.7']:10.2f}")
        for pair, v in summary[kind]["paired"].items():
            print(f"       {pair}: won {v['sets_won']}/{v['sets']} sets, mean AS gap {v['mean_gap']:+.3f}")
    print(f"base-model control AS {summary['base_control_AS']:.3f}")
    if "extras" in summary:
        x = summary["extras"]
        print("FineXtract, full fine-tune, mean over sets:")
        for metric, row in x["vs_n"].items():
            print(f"  {metric} vs N/N0: " + "  ".join(f"{m}: {v:.3f}" for m, v in row.items()))
        print(f"  more generations do not hurt (AS within 0.01): {x['more_generations_do_not_hurt']}")
        print(f"  clustering at N = {a.n_per_image}·N0: AS fast {x['fast_vs_faithful_AS']['fast']:.3f}, "
              f"faithful {x['fast_vs_faithful_AS']['faithful']:.3f} ({x['faithful_capped_thresholds']} thresholds "
              f"hit the {cfg['faithful_cap']:g} s cap)")
        print(f"  defences AS (N = {cfg['defence_n_per_image']}·N0): "
              + "  ".join(f"{d}: {v:.3f}" for d, v in x["defences"].items()) + "; reduced AS in "
              + ", ".join(f"{d} {r['sets_reduced']}/{r['sets']} sets" for d, r in x["defence_reduced_AS"].items()))
        print(f"  w' sweep AS (N = {cfg['sweep_n_per_image']}·N0): "
              + "  ".join(f"{w}: {v:.3f}" for w, v in x["w_sweep"].items()))
        print("  k sweep AS: " + "  ".join(f"{k}: {v:.3f}" for k, v in x["k_sweep"].items()))
    print(f"wrote {a.out / 'table1.json'} and {a.out / 'table1.png'} ({result['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
