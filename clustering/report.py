"""The audit report: every figure with its provenance (JSON), and the pairs image.

A rights holder must be able to rerun and get the same numbers, so the JSON carries the
generation provenance passed through from the sampler (base / fine-tuned file names and sha256,
method, w', k, seed, N, steps, sampler…), the clustering parameters and outcome, the descriptor
that ran, the τ list and the pack version.
"""
from __future__ import annotations

import json
import os
import platform
import time
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .descriptors import to_pil
from .metrics import SSCD_COPY_THRESHOLD

THUMB = 128
BAR = 320
PAD = 6


def pack_version() -> str:
    from .. import __version__  # the pack root, whatever folder name ComfyUI loaded it under

    return __version__


def build_report(metrics: dict, descriptor: str, provenance: dict | None = None,
                 clusters: dict | None = None, training_names: Sequence[str] | None = None) -> dict:
    """The JSON-able report. ``clusters`` is the clustering summary (without the reference mean,
    which is bulk, not evidence)."""
    clusters = {k: v for k, v in (clusters or {}).items() if k != "reference_mean"} or None
    return {
        "finextract_version": pack_version(),
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
        "paper": "FineXtract, Wu, Zhang & Wu, ICML 2025: AS (Eq. 1), A-ESR@tau (Eq. 2)",
        "descriptor": descriptor,
        "metrics": metrics,
        "training_images": list(training_names) if training_names is not None else None,
        "clustering": clusters,
        "provenance": provenance or {},
    }


def write_report(report: dict, folder: str, prefix: str = "finextract_report") -> str:
    """Write ``report`` as ``<prefix>_<n>.json`` in ``folder`` (never overwriting); returns the path."""
    os.makedirs(folder, exist_ok=True)
    n = 1
    while os.path.exists(path := os.path.join(folder, f"{prefix}_{n:05d}.json")):
        n += 1
    with open(path, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2, sort_keys=False)
    return path


def _thumb(image) -> Image.Image:
    """The image fitted to the cell: larger ones shrunk (bilinear), small ones (a 64 px miniature
    image) enlarged by a whole factor with nearest neighbour, so a person sees their pixels."""
    pil = to_pil(image)
    factor = THUMB // max(pil.size)
    if factor >= 2:
        pil = pil.resize((pil.width * factor, pil.height * factor), Image.NEAREST)
    pil.thumbnail((THUMB, THUMB), Image.BILINEAR)
    cell = Image.new("RGB", (THUMB, THUMB), (24, 24, 24))
    cell.paste(pil, ((THUMB - pil.width) // 2, (THUMB - pil.height) // 2))
    return cell


def render_report(training: Sequence, extracted: Sequence, best_match: Sequence[int],
                  best_score: Sequence[float], taus: Sequence[float]) -> Image.Image:
    """One row per training image, best score first: training | best extracted | score bar with a
    mark at every τ (and at SSCD's 0.75 copy threshold, dashed). A row is green above the largest
    τ, amber above the smallest, grey otherwise."""
    font = ImageFont.load_default()
    order = sorted(range(len(best_score)), key=lambda i: (-best_score[i], i))
    marks = sorted(set(float(t) for t in taus))
    width = 2 * THUMB + BAR + 4 * PAD
    row_h = THUMB + PAD
    canvas = Image.new("RGB", (width, PAD + row_h * max(1, len(order))), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    x_bar = 2 * THUMB + 3 * PAD
    for row, i in enumerate(order):
        y = PAD + row * row_h
        canvas.paste(_thumb(training[i]), (PAD, y))
        canvas.paste(_thumb(extracted[best_match[i]]), (2 * PAD + THUMB, y))
        s = float(best_score[i])
        colour = ((40, 160, 60) if marks and s > marks[-1] else
                  (230, 150, 20) if marks and s > marks[0] else (140, 140, 140))
        top, bottom = y + THUMB // 2 - 10, y + THUMB // 2 + 10
        draw.rectangle([x_bar, top, x_bar + BAR - 1, bottom], outline=(90, 90, 90))
        draw.rectangle([x_bar, top, x_bar + int(np.clip(s, 0, 1) * (BAR - 1)), bottom], fill=colour)
        for tau in marks:
            x = x_bar + int(tau * (BAR - 1))
            draw.line([x, top - 6, x, bottom + 6], fill=(200, 0, 0), width=2)
            draw.text((x - 8, bottom + 8), f"{tau:g}", fill=(200, 0, 0), font=font)
        x = x_bar + int(SSCD_COPY_THRESHOLD * (BAR - 1))
        for yy in range(top - 6, bottom + 6, 4):
            draw.line([x, yy, x, yy + 1], fill=(0, 0, 200))
        draw.text((x_bar, top - 20), f"training #{i} -> extracted #{best_match[i]}   score {s:.3f}",
                  fill=(0, 0, 0), font=font)
    return canvas
