"""The paper's Table 1 in miniature, with intervals: Direct, CFG and FineXtract on full, LoRA and
two-stage fine-tunes of the concept sets, in the regime where fine-tunes partially memorise.

``python -m finextract.bench.table1 [--quick] [--jobs 2] [--out out/table1]``
``python -m finextract.bench.table1 --readme out/table1/table1.json`` (rewrite the README section)

Units. A run is a list of units, each written to ``<out>/units/<name>.json`` when done; a rerun
skips finished units (and refuses one saved with other settings, naming what differs), so the
long full run survives interruption. ``--jobs 2`` runs units in two processes (results do not
depend on it). The units:

- ``partial <set> <kind>``: one fine-tune of ``kind`` (:mod:`.regime`: this world's recipe, the
  regime table's length) shared by every sampling seed (``--seeds``, default 0 and 1); per seed,
  N = 50·N0 images each of Direct, CFG (scale 3 full / 5 LoRA) and FineXtract (w′ 3 / 5, k −0.02),
  same per-image seeds, clustered into N0 (fast mode) and scored against the training images
  (AS, A-ESR@0.6/0.7). Per run, after the fact and without new sampling: the Fig. 4b curve (the
  first m·N0 images re-clustered: per-image seeds make them the m·N0 run) and the adaptive-N
  rules (:mod:`..clustering.adaptive_n`: where each would have stopped, and the scores there).
- ``control <set>``: the base model, Direct, per seed (the score of "nothing leaked").
- ``absent|saturated <set> <kind>`` on ``--ends-sets`` (one seed): the ends of the regime.
- On ``--extras-sets``, the ``partial <set> full`` unit also runs Table 4 (Cutout / RandAugment
  fine-tunes, FineXtract at N = ``--defence-n-per-image``·N0 against the undefended run's prefix),
  Fig. 6 (w′ and k sweeps at ``--sweep-n-per-image``·N0), faithful clustering of its
  FineXtract run beside the fast mode, and fewer model evaluations (ours): FineXtract at N with
  each ``--samplers`` entry (DDIM or DPM-Solver++(2M) × steps), its UNet evaluations per audit at
  the fixed N and at the adaptive-N stop.

Then ``table1.json`` (units + :func:`.table1_summary.summarise`: means over sets, the paired
FineXtract − CFG and CFG − Direct differences with 95 % bootstrap intervals over sets, one verdict
per paper claim, the regime check, adaptive N), ``table1.png`` and a printout. ``--quick``: the
first two sets, the same regime, no ends, extras on the first set.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import pathlib
import platform
import re
import shlex
import sys
import time

import torch
from PIL import Image, ImageDraw, ImageFont

from ..cli.resume import differences
from ..clustering import cluster, evaluate, load_descriptor
from ..clustering.adaptive_n import StopRule, stop_point
from ..miniature import dataset, finetune
from ..miniature.ddim import SAMPLERS
from ..miniature.demo import extract_images
from ..miniature.model import load_pipeline
from ..miniature.train import BASE_CHECKPOINT
from ..modelfiles import atomic_write
from . import regime, table1_readme
from .table1_summary import METHODS, METRICS, NAMES, summarise

N_PER_IMAGE = (1, 5, 10, 25, 50)
"""N / N0 of the A-ESR-vs-N curve (Fig. 4b)."""
W_SWEEP = (1.0, 2.0, 3.0, 5.0, 7.0)
K_SWEEP = (0.0, -0.02, -0.05, -0.1)
"""Fig. 6: w′ at k = −0.02, and k at w′ = 3, FineXtract on the full fine-tune."""
DEFENCES = ("cutout", "randaugment")
SAMPLER_GRID = ("ddim:50", "ddim:20", "ddim:10", "dpmpp_2m:20", "dpmpp_2m:10")
"""Fewer model evaluations (ours): the paper's 50 DDIM steps against fewer, and DPM-Solver++(2M)."""
STOP_RULES = {"default": StopRule(), "patient": StopRule(patience=10), "loose": StopRule(phi=0.5)}
"""The adaptive-N rules evaluated on every run: the default and one change of each knob."""


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _metrics(train_desc, desc) -> dict:
    raw = evaluate(train_desc, desc)["raw"]
    return {"AS": raw["AS"], "A-ESR@0.6": raw["A-ESR"]["0.6"], "A-ESR@0.7": raw["A-ESR"]["0.7"],
            "best_score": raw["best_score"]}


def _clustered(train_desc, desc, n0: int, mode: str = "fast", time_cap: float = 30.0) -> dict:
    """Cluster ``desc`` (generated images, in image order) into ``n0`` and score the centres."""
    result = cluster(desc, n0, mode=mode, time_cap=time_cap)
    return {**_metrics(train_desc, desc[result.indices]), "capped_thresholds": result.capped_thresholds}


def _post_hoc(train_desc, desc, n0: int) -> dict:
    """Fig. 4b and adaptive N of one run, from its descriptors alone (no sampling)."""
    n_max = len(desc) // n0
    out = {"vs_n": {str(m): {k: v for k, v in _clustered(train_desc, desc[:m * n0], n0).items() if k in METRICS}
                    for m in N_PER_IMAGE if m <= n_max}, "adaptive": {}}
    for name, rule in STOP_RULES.items():
        stop = stop_point(desc.numpy(), n0, rule)
        at_stop = _clustered(train_desc, desc[:stop["n"]], n0)
        out["adaptive"][name] = {**{k: stop[k] for k in ("n", "stopped", "saved")},
                                 **{m: at_stop[m] for m in METRICS}}
    return out


class Unit:
    """One resumable piece of the run: (regime, concept set, kind); the base control is regime
    ``control``, kind ``base``."""

    def __init__(self, regime_name: str, concept: str, kind: str):
        self.regime, self.set, self.kind = regime_name, concept, kind

    @property
    def name(self) -> str:
        return f"{self.regime}_{self.set}_{self.kind}"

    def steps(self, cfg: dict) -> int | None:
        return None if self.regime == "control" else cfg["lengths"][self.regime][self.kind]

    def seeds(self, cfg: dict) -> list[int]:
        return cfg["seeds"][:1] if self.regime in ("absent", "saturated") else cfg["seeds"]

    def extras(self, cfg: dict) -> bool:
        return self.regime == "partial" and self.kind == "full" and self.set in cfg["extras_sets"]

    def identity(self, cfg: dict) -> dict:
        """Every setting this unit's numbers depend on (a saved unit of other settings is refused)."""
        ident = {"unit": self.name, "steps": self.steps(cfg), "seeds": self.seeds(cfg), "n": cfg["n_per_image"],
                 "ddim_steps": cfg["ddim_steps"], "k": cfg["k"], "descriptor": cfg["descriptor"],
                 "stop_rules": {k: r.to_dict() for k, r in STOP_RULES.items()}}
        if self.regime != "control":
            ident.update(recipe=regime.RECIPE, lr=regime.LR, w=cfg["w"][self.kind],
                         cfg_scale=cfg["cfg_scale"][self.kind], finetune_seed=cfg["finetune_seed"],
                         **({"lora": regime.LORA} if self.kind == "lora" else {}),
                         **({"inversion_steps": cfg["inversion_steps"]} if self.kind == "two-stage" else {}))
        if self.extras(cfg):
            ident.update({k: cfg[k] for k in ("defence_n_per_image", "sweep_n_per_image", "faithful_cap",
                                               "w_sweep", "k_sweep", "samplers")})
        return ident

    def cost(self, cfg: dict) -> float:
        """Rough relative cost, to start the longest units first (fine-tune steps, LoRA slower)."""
        ft = (self.steps(cfg) or 0) * (1.3 if self.kind == "lora" else 1.0)
        return ft + 2000 * len(self.seeds(cfg)) * (5 if self.regime != "control" else 1) / 5 + 3000 * self.extras(cfg)


def run_unit(base, descriptor, unit: Unit, cfg: dict) -> dict:
    """Every number of one unit (see the module docstring)."""
    start = time.monotonic()
    images, caption = dataset.concept_set(unit.set)
    n0 = len(images)
    n = cfg["n_per_image"] * n0
    train_desc = descriptor.embed(images)
    k, steps = cfg["k"], cfg["ddim_steps"]

    def run(model, method, w, kk, seed, label, count=n, post_hoc=True, sampler="ddim", sampler_steps=steps):
        """(scores, descriptors in image order) of ``count`` images of ``method``."""
        t0 = time.monotonic()
        _, ex = extract_images(model, base if method == "finextract" else None, caption, n0, count, method, w, kk,
                               sampler_steps, seed, descriptor, label, sampler)
        scores = {**_metrics(train_desc, ex.extracted_descriptors()), "w": w, "k": kk,
                  "seconds": round(time.monotonic() - t0, 1)}
        return ({**scores, **_post_hoc(train_desc, ex.descriptors, n0)} if post_hoc else scores), ex.descriptors

    out = {"unit": {"regime": unit.regime, "set": unit.set, "kind": unit.kind}, "identity": unit.identity(cfg),
           "caption": caption, "n0": n0, "n": n, "steps": unit.steps(cfg), "seeds": {}}
    label = f"{unit.regime} {unit.set} {unit.kind}"
    if unit.regime == "control":
        for seed in unit.seeds(cfg):
            out["seeds"][str(seed)] = {"direct": run(base, "direct", 1.0, 0.0, seed, f"{label} s{seed}")[0]}
        out["seconds"] = round(time.monotonic() - start, 1)
        return out
    t = time.monotonic()
    model = regime.fine_tune(base, unit.kind, images, caption, unit.steps(cfg), cfg["finetune_seed"],
                             inversion_steps=cfg["inversion_steps"])
    out["finetune_seconds"] = round(time.monotonic() - t, 1)
    _log(f"{label}: fine-tune of {unit.steps(cfg)} steps done in {out['finetune_seconds']} s")
    w_fx, w_cfg = cfg["w"][unit.kind], cfg["cfg_scale"][unit.kind]
    fx_desc = None
    for seed in unit.seeds(cfg):
        runs = {"direct": run(model, "direct", 1.0, 0.0, seed, f"{label} s{seed} direct")[0],
                "cfg": run(model, "cfg", w_cfg, 0.0, seed, f"{label} s{seed} cfg")[0]}
        runs["finextract"], desc = run(model, "finextract", w_fx, k, seed, f"{label} s{seed} finextract")
        fx_desc = desc if fx_desc is None else fx_desc
        out["seeds"][str(seed)] = runs
        _log(f"{label} seed {seed}: " + "  ".join(f"{m} AS {runs[m]['AS']:.3f} A-ESR@0.6 {runs[m]['A-ESR@0.6']:.1f}"
                                                  for m in METHODS))
    if unit.extras(cfg):
        out["extras"] = _extras(base, model, unit, cfg, images, caption, train_desc, fx_desc,
                                out["seeds"][str(cfg["seeds"][0])]["finextract"], run)
    out["seconds"] = round(time.monotonic() - start, 1)
    return out


def _extras(base, model, unit: Unit, cfg: dict, images, caption, train_desc, fx_desc, fx_run, run) -> dict:
    """Table 4, Fig. 6 and fast vs faithful clustering on the first seed of a partial full fine-tune."""
    n0, seed, k = len(images), cfg["seeds"][0], cfg["k"]
    w = cfg["w"][unit.kind]
    only = {m: fx_run[m] for m in METRICS}
    faithful = _clustered(train_desc, fx_desc, n0, mode="faithful", time_cap=cfg["faithful_cap"])
    out = {"fast_vs_faithful": {"fast": only, "faithful": {m: faithful[m] for m in METRICS}},
           "faithful_capped_thresholds": faithful["capped_thresholds"]}
    n_defence = min(cfg["defence_n_per_image"], cfg["n_per_image"]) * n0
    none = only if n_defence == len(fx_desc) else _clustered(train_desc, fx_desc[:n_defence], n0)
    out["defences"] = {"none": {m: none[m] for m in METRICS}}
    for defence in DEFENCES:
        defended = regime.fine_tune(base, unit.kind, images, caption, unit.steps(cfg), cfg["finetune_seed"],
                                    augment=finetune.AUGMENTATIONS[defence])
        out["defences"][defence] = run(defended, "finextract", w, k, seed, f"{unit.set} full+{defence}",
                                       n_defence, post_hoc=False)[0]
    n_sweep = min(cfg["sweep_n_per_image"], cfg["n_per_image"]) * n0
    out["w_sweep"] = {str(ww): run(model, "finextract", ww, k, seed, f"{unit.set} w'={ww}", n_sweep, False)[0]
                      for ww in cfg["w_sweep"]}
    out["k_sweep"] = {str(kk): (out["w_sweep"][str(w)] if kk == k and str(w) in out["w_sweep"] else
                                run(model, "finextract", w, kk, seed, f"{unit.set} k={kk}", n_sweep, False)[0])
                      for kk in cfg["k_sweep"]}
    out["samplers"] = {}
    for key in cfg["samplers"]:
        sampler, steps = key.split(":")
        same = sampler == "ddim" and int(steps) == cfg["ddim_steps"]  # the main run itself
        r = fx_run if same else run(model, "finextract", w, k, seed, f"{unit.set} {key}", sampler=sampler,
                                    sampler_steps=int(steps))[0]
        evals = 2 * int(steps)  # FineXtract: the fine-tuned and the base model once per step
        out["samplers"][key] = {**{m: r[m] for m in METRICS}, "evals_per_image": evals,
                                "evals_per_audit": evals * len(fx_desc),
                                "evals_at_stop": evals * r["adaptive"]["default"]["n"],
                                **{f"{m}_at_stop": r["adaptive"]["default"][m] for m in METRICS}}
    return out


_STATE: dict = {}


def _init_worker() -> None:
    torch.set_num_threads(1)
    _STATE["base"], _STATE["descriptor"] = load_pipeline(BASE_CHECKPOINT), load_descriptor()


def _worker(args) -> tuple[str, float]:
    """Run one unit in a worker process and write its JSON (the resume point)."""
    unit, cfg, path = args
    if not _STATE:
        _init_worker()
    t = time.monotonic()
    result = run_unit(_STATE["base"], _STATE["descriptor"], unit, cfg)
    with atomic_write(path) as f:
        f.write(json.dumps(result, indent=1).encode())
    return unit.name, time.monotonic() - t


def plan(cfg: dict) -> list[Unit]:
    """Every unit of the run, longest first."""
    units = [Unit("control", s, "base") for s in cfg["sets"]]
    units += [Unit("partial", s, kind) for s in cfg["sets"] for kind in cfg["kinds"]]
    units += [Unit(r, s, kind) for r in ("absent", "saturated") for s in cfg["ends_sets"] for kind in cfg["kinds"]]
    return sorted(units, key=lambda u: -u.cost(cfg))


def _saved(unit: Unit, cfg: dict, path: pathlib.Path) -> dict | None:
    """The unit's saved result when it was run with these settings; None when not run yet."""
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    if differs := differences(saved["identity"], unit.identity(cfg)):
        raise SystemExit(f"{path} was run with other settings ({differs}); delete it or choose another --out")
    return saved


def machine() -> str:
    """The machine in words: CPU model, cores, threads per job."""
    model = next((line.split(":", 1)[1].strip() for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) if pathlib.Path("/proc/cpuinfo").is_file() \
        else platform.processor()
    return f"{model}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, torch {torch.__version__}"


def _lengths(a) -> dict:
    lengths = {r: dict(v) for r, v in regime.LENGTHS.items()}
    for item in a.steps or []:
        kind, _, steps = item.partition("=")
        if kind not in regime.KINDS or not steps.isdigit():
            raise SystemExit(f"--steps takes KIND=N with KIND in {regime.KINDS}, got {item!r}")
        lengths["partial"][kind] = int(steps)
    return {r: {kind: max(1, round(s * a.length_scale)) for kind, s in v.items()} for r, v in lengths.items()}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m finextract.bench.table1", description=__doc__.split("\n")[0])
    p.add_argument("--readme", type=pathlib.Path, metavar="JSON",
                   help="only rewrite the README's results section from this table1.json, then exit")
    p.add_argument("--readme-path", type=pathlib.Path, default=table1_readme.README)
    p.add_argument("--quick", action="store_true", help="the first two sets, same regime, no ends, extras on one set")
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("out/table1"))
    p.add_argument("--sets", nargs="*", help="concept sets (default: the science sets)")
    p.add_argument("--kinds", default=",".join(regime.KINDS))
    p.add_argument("--seeds", default="0,1", help="sampling seeds; every seed shares the set's fine-tune")
    p.add_argument("--finetune-seed", type=int, default=0)
    p.add_argument("--n-per-image", type=int, default=50, help="N / N0 (paper: 50)")
    p.add_argument("--ddim-steps", type=int, default=20, help="DDIM steps (the calibration's 20; paper 50)")
    p.add_argument("--steps", nargs="*", metavar="KIND=N", help="override the partial regime's length of a kind")
    p.add_argument("--length-scale", type=float, default=1.0,
                   help="multiply every fine-tune length (tests: a tiny run of the whole pipeline)")
    p.add_argument("--inversion-steps", type=int, default=regime.INVERSION["steps"])
    p.add_argument("--k", type=float, default=regime.K)
    p.add_argument("--ends-sets", nargs="*", default=None,
                   help="sets of the absent and saturated points (default: the first set; --quick: none)")
    p.add_argument("--extras-sets", nargs="*", default=None,
                   help="sets of Table 4, Fig. 6 and faithful clustering (default: the first two; --quick: one)")
    p.add_argument("--sweep-n-per-image", type=int, default=10, help="N / N0 of the w'/k sweeps")
    p.add_argument("--defence-n-per-image", type=int, default=None, help="N / N0 of the defence runs (default N)")
    p.add_argument("--w-sweep", default=",".join(map(str, W_SWEEP)))
    p.add_argument("--k-sweep", default=",".join(map(str, K_SWEEP)))
    p.add_argument("--samplers", default=",".join(SAMPLER_GRID),
                   help="SAMPLER:STEPS of the fewer-evaluations grid (FineXtract at N; ddim at --ddim-steps reuses the main run)")
    p.add_argument("--faithful-cap", type=float, default=30.0, help="faithful clustering's seconds per threshold")
    p.add_argument("--jobs", type=int, default=1, help="units run in this many processes (2 on 2 cores)")
    a = p.parse_args(argv)
    if a.readme is not None:
        table1_readme.write(a.readme, a.readme_path)
        print(f"rewrote the Table 1 section of {a.readme_path} from {a.readme}")
        return
    torch.set_num_threads(1)
    sets = a.sets or list(dataset.SCIENCE_CONCEPTS[:2] if a.quick else dataset.SCIENCE_CONCEPTS)
    cfg = {"sets": sets, "kinds": a.kinds.split(","), "seeds": [int(s) for s in a.seeds.split(",")],
           "finetune_seed": a.finetune_seed, "n_per_image": a.n_per_image, "ddim_steps": a.ddim_steps,
           "lengths": _lengths(a), "inversion_steps": a.inversion_steps, "k": a.k,
           "w": dict(regime.W_FINEXTRACT), "cfg_scale": dict(regime.CFG_SCALE),
           "ends_sets": a.ends_sets if a.ends_sets is not None else ([] if a.quick else sets[:1]),
           "extras_sets": a.extras_sets if a.extras_sets is not None else sets[:1 if a.quick else 2],
           "sweep_n_per_image": a.sweep_n_per_image, "defence_n_per_image": a.defence_n_per_image or a.n_per_image,
           "w_sweep": [float(w) for w in a.w_sweep.split(",")], "k_sweep": [float(k) for k in a.k_sweep.split(",")],
           "samplers": a.samplers.split(","), "faithful_cap": a.faithful_cap, "descriptor": load_descriptor().name, "quick": a.quick, "jobs": a.jobs}
    unknown = set(cfg["kinds"]) - set(regime.KINDS)
    if unknown:
        raise SystemExit(f"unknown kinds {sorted(unknown)}; expected {regime.KINDS}")
    if bad := [key for key in cfg["samplers"] if not re.fullmatch(rf"({'|'.join(SAMPLERS)}):[1-9]\d*", key)]:
        raise SystemExit(f"--samplers takes SAMPLER:STEPS with SAMPLER in {sorted(SAMPLERS)}, got {bad}")
    print(regime.describe(cfg["lengths"], cfg["inversion_steps"]))
    print(f"sets {', '.join(sets)}; kinds {', '.join(cfg['kinds'])}; sampling seeds {cfg['seeds']} share one fine-tune "
          f"per (set, kind); N = {a.n_per_image}·N0, {a.ddim_steps} DDIM steps; ends on {cfg['ends_sets'] or 'none'} "
          f"(seed {cfg['seeds'][0]}); extras on {cfg['extras_sets'] or 'none'}", flush=True)
    folder = a.out / "units"
    folder.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    units = plan(cfg)
    results = {u.name: r for u in units if (r := _saved(u, cfg, folder / f"{u.name}.json")) is not None}
    todo = [(u, cfg, folder / f"{u.name}.json") for u in units if u.name not in results]
    _log(f"{len(units)} units: {len(results)} already done (skipped), {len(todo)} to run with {a.jobs} job(s)")
    if a.jobs > 1 and len(todo) > 1:
        with multiprocessing.get_context("spawn").Pool(a.jobs, initializer=_init_worker) as pool:
            for name, seconds in pool.imap_unordered(_worker, todo, chunksize=1):
                _log(f"unit {name} done in {seconds:.0f} s")
    else:
        for task in todo:
            name, seconds = _worker(task)
            _log(f"unit {name} done in {seconds:.0f} s")
    results = {u.name: json.loads((folder / f"{u.name}.json").read_text()) for u in units}
    result = {"command": "python -m finextract.bench.table1 " + shlex.join(sys.argv[1:] if argv is None else argv),
              "date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(), "config": cfg,
              "regime": {"lengths": cfg["lengths"], "recipe": regime.RECIPE, "lr": regime.LR, "lora": regime.LORA,
                         "inversion": {**regime.INVERSION, "steps": cfg["inversion_steps"]},
                         "partial_band": regime.PARTIAL_BAND},
              "stop_rules": {k: {**r.to_dict(), "rule": r.describe()} for k, r in STOP_RULES.items()},
              "summary": summarise(results), "units": results,
              "seconds": round(time.monotonic() - start, 1),
              "unit_seconds": {name: r["seconds"] for name, r in results.items()}}
    (a.out / "table1.json").write_text(json.dumps(result, indent=1))
    plot(result["summary"], a.out / "table1.png")
    print("\n" + table1_readme.render(result))
    print(f"wrote {a.out / 'table1.json'} and {a.out / 'table1.png'} ({result['seconds']:.0f} s)")


def plot(summary: dict, path: pathlib.Path) -> None:
    """Mean AS per method and kind (partial regime) with ± sd over sets; base control line. PIL only."""
    block = summary["table"].get("partial", {})
    w, h, pad = 120 + 200 * max(1, len(block)), 320, 40
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    d.line([pad, h - pad, w - 10, h - pad], fill="black")
    d.line([pad, 10, pad, h - pad], fill="black")
    scale = h - pad - 20
    for v in (0.2, 0.4, 0.6, 0.8, 1.0):
        y = h - pad - v * scale
        d.line([pad - 4, y, w - 10, y], fill=(220, 220, 220))
        d.text((5, y - 6), f"{v:.1f}", fill="black", font=font)
    colours = {"direct": (150, 150, 150), "cfg": (70, 130, 200), "finextract": (220, 90, 40)}
    x = pad + 20
    for kind, methods in block.items():
        for m in METHODS:
            v, s = methods[m]["AS"], methods[m]["AS_sd"]
            top = h - pad - max(v, 0.0) * scale  # an AS below 0 (unrelated images) draws no bar
            d.rectangle([x, top, x + 40, h - pad], fill=colours[m])
            d.line([x + 20, top - s * scale, x + 20, top + s * scale], fill="black", width=2)
            d.text((x, h - pad + 4), NAMES[m][:6], fill="black", font=font)
            x += 50
        d.text((x - 140, h - pad + 18), kind, fill="black", font=font)
        x += 50
    if summary["control"]:
        y = h - pad - summary["control"]["AS"] * scale
        d.line([pad, y, w - 10, y], fill=(0, 150, 0), width=1)
        d.text((w - 150, y - 14), "base-model control", fill=(0, 150, 0), font=font)
    d.text((pad + 5, 2), "mean AS over concept sets (SSCD), partial regime, ± sd over sets", fill="black", font=font)
    img.save(path)


if __name__ == "__main__":
    main()
