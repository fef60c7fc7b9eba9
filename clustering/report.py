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
BAR = 400
PAD = 6
TAU_COLOUR = (200, 0, 0)
COPY_COLOUR = (0, 0, 200)


def pack_version() -> str:
    from .. import __version__  # the pack root, whatever folder name ComfyUI loaded it under

    return __version__


def build_report(metrics: dict, descriptor: str, provenance: dict | None = None,
                 clusters: dict | None = None, training_names: Sequence[str] | None = None,
                 verdict: str | None = None) -> dict:
    """The JSON-able report. ``clusters`` is the clustering summary (without the reference mean,
    which is bulk, not evidence); ``verdict`` the outcome in words (default :func:`headline`), the
    same sentence the report image carries."""
    clusters = {k: v for k, v in (clusters or {}).items() if k != "reference_mean"} or None
    return {
        "finextract_version": pack_version(),
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
        "paper": "FineXtract, Wu, Zhang & Wu, ICML 2025: AS (Eq. 1), A-ESR@tau (Eq. 2)",
        "descriptor": descriptor,
        "verdict": headline(metrics) if verdict is None else verdict,
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


def headline(metrics: dict) -> str:
    """The outcome of ``metrics`` (``evaluate``'s result) in words: how many training images were
    recovered above the lowest τ and above SSCD's copy line. A caller that knows more (the demo,
    with its base-model control) passes its own verdict instead."""
    raw, taus = metrics["raw"], metrics["taus"]
    scores, low = raw["best_score"], min(taus)
    above, copies = sum(s > low for s in scores), sum(s > SSCD_COPY_THRESHOLD for s in scores)
    found = (f"{above} of {len(scores)} training images recovered above tau = {low:g} (likely copies), "
             f"{copies} above SSCD's copy line {SSCD_COPY_THRESHOLD:g}; AS {raw['AS']:.3f}.")
    return found + (" The extracted images hold evidence that the fine-tune leaks its training images."
                    if above else " No training image was recovered: no evidence of leakage in these images.")


def mark_labels(taus: Sequence[float]) -> list[tuple[float, str, str]]:
    """Every line drawn across the score bars, left to right: (score, ``tau`` or ``copy``, label)."""
    marks = [(float(t), "tau", f"tau {t:g}: A-ESR@{t:g} counts scores above it") for t in sorted(set(taus))]
    marks.append((SSCD_COPY_THRESHOLD, "copy", f"{SSCD_COPY_THRESHOLD:g}: SSCD's authors call a score above it a copy"))
    return sorted(marks)


def row_label(score: float, taus: Sequence[float]) -> str:
    """What one training image's best score means: the lines it passes."""
    passed = [f"tau {t:g}" for t in sorted(set(taus)) if score > t]
    passed += ["the copy line"] if score > SSCD_COPY_THRESHOLD else []
    return (f"best score {score:.3f}: " +
            (f"above {', '.join(passed)}" if passed else "below every line (not recovered)"))


def legend(taus: Sequence[float]) -> list[str]:
    """The footer: what the picture shows, for someone who has not read the paper."""
    marks = sorted(set(float(t) for t in taus))
    return ["Each row: a training image, the extracted image most similar to it, and their SSCD similarity "
            "(a copy-detection score: 1 = identical, unrelated photos score below 0.3). Rows best first.",
            f"Red lines: the paper's thresholds tau ({', '.join(f'{t:g}' for t in marks)}); A-ESR@tau is "
            "the share of training images whose best match scores above tau. AS is the mean best score.",
            f"Blue dashed line: {SSCD_COPY_THRESHOLD:g}, above which SSCD's authors read a copy.",
            f"Bar colour: green above tau {marks[-1]:g}, amber above tau {marks[0]:g}, grey below."]


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)  # Pillow's bundled font: nothing to download


def _wrap(text: str, font, width: int) -> list[str]:
    """``text`` broken into lines no wider than ``width`` pixels (its own line breaks kept)."""
    lines = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split():
            candidate = f"{line} {word}".strip()
            if line and font.getlength(candidate) > width:
                lines.append(line)
                line = word
            else:
                line = candidate
        lines.append(line)
    return lines


def render_report(training: Sequence, extracted: Sequence, best_match: Sequence[int],
                  best_score: Sequence[float], taus: Sequence[float], verdict: str = "") -> Image.Image:
    """The picture a person reads without the paper: ``verdict`` on top, then one row per
    training image, best score first (training | best extracted | score bar with what the score
    passes), every line across the bars labelled at the top (each τ in red, SSCD's 0.75 copy line
    dashed blue), and a legend underneath. A bar is green above the largest τ, amber above the
    smallest, grey otherwise."""
    big, small = _font(15), _font(12)
    order = sorted(range(len(best_score)), key=lambda i: (-best_score[i], i))
    marks = sorted(set(float(t) for t in taus))
    width = 2 * THUMB + BAR + 7 * PAD
    x_bar = 2 * THUMB + 4 * PAD
    line_h = 16
    title = _wrap(verdict, big, width - 2 * PAD) if verdict else []
    labels = mark_labels(marks)
    notes = [line for note in legend(marks) for line in _wrap(note, small, width - 2 * PAD)]
    y_rows = PAD + len(title) * (line_h + 3) + PAD + (len(labels) + 1) * line_h + PAD
    row_h = THUMB + PAD
    height = y_rows + row_h * max(1, len(order)) + PAD + len(notes) * line_h + PAD
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for n, line in enumerate(title):
        draw.text((PAD, PAD + n * (line_h + 3)), line, fill=(0, 0, 0), font=big)
    y = PAD + len(title) * (line_h + 3) + PAD
    draw.text((PAD, y + len(labels) * line_h), "training image", fill=(0, 0, 0), font=small)
    draw.text((2 * PAD + THUMB, y + len(labels) * line_h), "best extracted match", fill=(0, 0, 0), font=small)

    def x_of(score: float) -> int:
        return x_bar + int(np.clip(score, 0, 1) * (BAR - 1))

    def text(xy, words: str, fill=(0, 0, 0)) -> None:
        """Text on a white patch, so the lines it crosses do not run through it."""
        draw.rectangle(draw.textbbox(xy, words, font=small), fill=(255, 255, 255))
        draw.text(xy, words, fill=fill, font=small)

    def mark(value: float, kind: str, top: int, bottom: int) -> None:
        x = x_of(value)
        if kind == "tau":
            draw.line([x, top, x, bottom], fill=TAU_COLOUR, width=2)
        else:  # dashed
            for yy in range(top, bottom, 6):
                draw.line([x, yy, x, min(yy + 2, bottom)], fill=COPY_COLOUR, width=2)

    bottom = y_rows + row_h * max(1, len(order)) - PAD
    # one label row per line, the rightmost line's on top, each label ending at its line: a line
    # starts at its own label, so no label is crossed by another line
    for n, (value, kind, words) in enumerate(reversed(labels)):
        x, top = x_of(value), y + n * line_h
        left = x - 4 - small.getlength(words)
        text((left, top) if left >= PAD else (x + 4, top), words, TAU_COLOUR if kind == "tau" else COPY_COLOUR)
        mark(value, kind, top + 2, bottom)
    axis = y + len(labels) * line_h  # the scale of the bars, under the labels
    text((x_bar, axis), "0")
    text((x_bar + (BAR - small.getlength("SSCD similarity")) // 2, axis), "SSCD similarity")
    text((x_bar + BAR - small.getlength("1"), axis), "1")
    for row, i in enumerate(order):
        top = y_rows + row * row_h
        canvas.paste(_thumb(training[i]), (PAD, top))
        canvas.paste(_thumb(extracted[best_match[i]]), (2 * PAD + THUMB, top))
        s = float(best_score[i])
        colour = ((40, 160, 60) if marks and s > marks[-1] else
                  (230, 150, 20) if marks and s > marks[0] else (140, 140, 140))
        bar_top, bar_bottom = top + THUMB // 2 - 10, top + THUMB // 2 + 10
        draw.rectangle([x_bar, bar_top, x_bar + BAR - 1, bar_bottom], fill=(255, 255, 255), outline=(90, 90, 90))
        draw.rectangle([x_bar, bar_top, x_of(s), bar_bottom], fill=colour)
        for value, kind, _ in labels:  # the lines again, over the bar
            mark(value, kind, bar_top - 4, bar_bottom + 4)
        text((x_bar, bar_top - 20), f"training #{i}  ->  extracted #{best_match[i]}")
        text((x_bar, bar_bottom + 6), row_label(s, marks))
    for n, line in enumerate(notes):
        draw.text((PAD, bottom + 2 * PAD + n * line_h), line, fill=(60, 60, 60), font=small)
    return canvas
