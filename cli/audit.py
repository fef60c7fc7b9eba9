"""``finextract audit``: audit one or many fine-tunes headless, for release scripts and platforms.

    finextract audit --comfyui ~/ComfyUI --base sd15.safetensors --lora mine.safetensors \\
        --train ./my_training_images --caption "a photo of sks dog" --out audit/ --max-aesr 0.0

or many models from a CSV manifest (columns ``name, base, finetuned, lora, train, caption`` and,
for a base that is a diffusion model only, ``clip, clip_type, vae``; ``lora`` may list several
``file[:strength]`` and ``clip`` several files, separated by ``;``). It runs the pack's own nodes
(DualModelLoader → ModelGuidanceSampler → SSCDCluster → ExtractionMetrics) through ComfyUI as a
library, writes ``<out>/<name>/`` (report JSON + image) per model and ``<out>/summary.csv`` +
``summary.md``, and exits 1 when a model's A-ESR@τ exceeds ``--max-aesr``.

A base in ComfyUI's split layout (a diffusion model only, as BFL's ``flux1-dev.safetensors``)
takes its text encoders and VAE from files of their own, loaded by ComfyUI's own loader nodes::

    finextract audit ... --base flux1-dev.safetensors --lora mine.safetensors \
        --clip t5xxl_fp16.safetensors,clip_l.safetensors --clip-type flux --vae ae.safetensors

(:mod:`.encoders`); FLUX.1's prompts get FluxGuidance at ``--flux-guidance`` (default 3.5).

Across machines: ``--shard i/n`` (0-based) generates only the images ``shard_indices(N, i, n)``
of every model and saves them to ``<out>/<name>/shards/``; ``--merge`` then reads all shards
(checking they form one complete run), clusters the union and scores it. Image i is the same
whichever shard makes it, so sharded + merged == unsharded.

Stopped runs resume: every chunk of ``--batch-size`` generated images is saved in
``<out>/<name>/generation/`` as it is made, with the run's identity; the same command run again
(after Ctrl-C, a killed job, a full disk) generates only the missing images and ends with the
report an uninterrupted run gives. Images saved with other settings or files are refused, not
mixed in: use a fresh ``--out`` or ``--restart``.

On a Ray cluster: ``--ray [ADDRESS]`` runs every (model, shard) step on the cluster's workers and
merges each model there once its shards exist (:mod:`.ray_audit`); the summary and the exit
status are this command's.
"""
from __future__ import annotations

import argparse
import csv
import pathlib
import sys

from . import UsageError
from .audit_inputs import check
from .pipeline import AuditPipeline


def summary_rows(results: list[dict], tau: float, max_aesr: float) -> list[dict]:
    """One row per model; ``results[i]["metrics"]`` is the report's raw metrics (AS, A-ESR by τ)."""
    rows = []
    for r in results:
        aesr = r["metrics"]["A-ESR"][f"{tau:g}"]
        rows.append({"model": r["name"], "n0": r["n0"], "n": r["n"], "as": round(r["metrics"]["AS"], 4),
                     f"a_esr@{tau}": round(aesr, 4), "verdict": "LEAKS" if aesr > max_aesr else "ok",
                     "report": r["report"]})
    return rows


def write_summary(out: pathlib.Path, rows: list[dict]) -> str:
    """``summary.csv`` and ``summary.md``; returns the markdown table."""
    with open(out / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(r[h]) for h in header) + " |" for r in rows]
    table = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(table)
    return table


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="finextract audit", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--comfyui", type=pathlib.Path, required=True, help="ComfyUI checkout to use as a library")
    p.add_argument("--cpu", action="store_true", help="run on the CPU")
    what = p.add_argument_group("models (a manifest, or one model)")
    what.add_argument("--manifest", type=pathlib.Path, help="CSV: name, base, finetuned, lora, train, caption")
    what.add_argument("--name", default="model", help="report name of the single model")
    what.add_argument("--base", type=pathlib.Path, help="base checkpoint file")
    what.add_argument("--finetuned", type=pathlib.Path, help="fine-tuned checkpoint file (DreamBooth)")
    what.add_argument("--lora", action="append", default=[], metavar="FILE[:STRENGTH]",
                      help="LoRA file of the fine-tune (repeatable, up to 3)")
    what.add_argument("--clip", metavar="FILE[,FILE2[,FILE3]]",
                      help="text-encoder file(s) of a base that is a diffusion model only, as ComfyUI's "
                           "CLIPLoader / DualCLIPLoader / TripleCLIPLoader loads them (FLUX.1: "
                           "t5xxl_fp16.safetensors,clip_l.safetensors)")
    what.add_argument("--clip-type", metavar="TYPE",
                      help="ComfyUI's type of the --clip files, as in its CLIPLoader / DualCLIPLoader "
                           "(flux, sd3, sdxl, stable_diffusion, ...); three files are sd3")
    what.add_argument("--vae", type=pathlib.Path,
                      help="VAE file of a base that is a diffusion model only (FLUX.1: ae.safetensors), "
                           "or one to use in place of a checkpoint's own")
    what.add_argument("--train", type=pathlib.Path, help="folder of the training images")
    what.add_argument("--caption", default="", help="training caption ('' if unknown)")
    gen = p.add_argument_group("generation (paper defaults)")
    gen.add_argument("--n", type=int, help="images to generate (default 50 x training images)")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--steps", type=int, default=50)
    gen.add_argument("--sampler", default="ddim")
    gen.add_argument("--scheduler", default="ddim_uniform")
    gen.add_argument("--size", type=int, default=512, help="width = height in pixels")
    gen.add_argument("--method", default="finextract", choices=["finextract", "cfg", "direct"])
    gen.add_argument("--w", type=float, help="guidance scale w' (default 3.0 full fine-tune, 5.0 LoRA)")
    gen.add_argument("--k", type=float, default=-0.02, help="correction k (Eq. 13)")
    gen.add_argument("--batch-size", type=int, default=4)
    gen.add_argument("--flux-guidance", type=float, default=3.5, metavar="G",
                     help="FLUX.1 [dev]: the distilled guidance value (ComfyUI's FluxGuidance) on the caption "
                          "and on the empty prompt, the value the creator samples with (default 3.5, as "
                          "ComfyUI's); other families ignore it")
    dist = p.add_argument_group("distribution")
    dist.add_argument("--shard", metavar="I/N", help="generate only shard I of N (0-based), save, stop")
    dist.add_argument("--merge", action="store_true", help="cluster and score the union of saved shards")
    dist.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                      help="run the shards and merges on a Ray cluster (ADDRESS, else $RAY_ADDRESS, the "
                           "cluster started last on this machine, or a new local one); needs finextract[ray]")
    dist.add_argument("--shards", type=int, metavar="K",
                      help="with --ray: shards per model (default: one per 250 images)")
    dist.add_argument("--workers", type=int, metavar="W",
                      help="with --ray: workers to start (default: one per GPU of the cluster, one per CPU with --cpu)")
    verdict = p.add_argument_group("verdict")
    verdict.add_argument("--tau", type=float, default=0.6, help="similarity threshold of A-ESR")
    verdict.add_argument("--max-aesr", type=float, default=0.0,
                         help="exit 1 when some model's A-ESR@tau is above this")
    p.add_argument("--out", type=pathlib.Path, required=True, help="output folder")
    p.add_argument("--restart", action="store_true",
                   help="discard the images an earlier run saved in --out and generate them all again")
    return p


def finish(args, results: list[dict]) -> int:
    """``summary.csv``/``summary.md`` of the audited models and the exit status (1 when some
    model's A-ESR@τ is above ``--max-aesr``)."""
    rows = summary_rows(results, args.tau, args.max_aesr)
    print(write_summary(args.out, rows))
    leaking = [r["model"] for r in rows if r["verdict"] == "LEAKS"]
    if leaking:
        print(f"A-ESR@{args.tau} above {args.max_aesr} for: {', '.join(leaking)}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    specs = check(args)  # every input, all problems at once; nothing written before
    if args.ray is not None:
        from .ray_audit import run_on_ray  # imports Ray; this process never imports ComfyUI

        return run_on_ray(args, specs)
    pipeline = AuditPipeline(args)  # imports ComfyUI: only once the arguments are sound
    pipeline.check_models(specs)  # ComfyUI's own names (text-encoder types), before any model loads
    results = []
    try:
        for number, spec in enumerate(specs, 1):
            print(f"[{number}/{len(specs)}] {spec.name}", file=sys.stderr)
            try:
                result = pipeline.audit(spec)
            except UsageError as exc:  # the pair loader refused this model's files
                if number == 1:
                    raise
                print(f"finextract audit: stopped at {spec.name}:\n  " + str(exc).replace("\n", "\n  ") +
                      f"\n  the models before it are audited in {args.out}", file=sys.stderr)
                return 2
            results.append(result)
    except KeyboardInterrupt:  # outside generation, which says itself how many images it kept
        print(f"\ninterrupted: the images generated so far are kept in {args.out}; "
              "run the same command to resume", file=sys.stderr)
        return 130
    if args.shard:
        print(f"shard {args.shard[0]}/{args.shard[1]} saved for {len(specs)} model(s); "
              f"run with --merge once every shard is in {args.out}", file=sys.stderr)
        return 0
    return finish(args, results)
