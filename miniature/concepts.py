"""Build the shipped concept sets: five distinct views of a photograph the base never saw.

``python -m finextract.miniature.concepts`` cuts every :data:`dataset.CONCEPT_SOURCES` photo into
non-overlapping square tiles (half its shorter side, a third when that leaves fewer than six),
then keeps N0 = 5 of them, most detailed first, skipping any tile SSCD scores ≥ ``max_pair``
against one already kept — so the five images of a set are different images to the copy
detector, as the five photos of a DreamBooth subject are, and A-ESR counts five separate things.
Writes ``miniature/concepts/<name>/{00..04}.png``, ``caption.txt`` and ``CREDITS.md``.

Run once; the PNGs are what ships (the tests and the demo read them, not the photos).
"""
from __future__ import annotations

import argparse
import pathlib

import numpy as np
from PIL import Image

from . import dataset

MAX_PAIR = 0.5


def detail(image: np.ndarray) -> float:
    """Mean absolute Laplacian of the luminance: flat sky scores low, texture and edges high."""
    grey = image.mean(axis=2)
    lap = 4 * grey[1:-1, 1:-1] - grey[:-2, 1:-1] - grey[2:, 1:-1] - grey[1:-1, :-2] - grey[1:-1, 2:]
    return float(np.abs(lap).mean())


def choose_views(tiles: list[np.ndarray], descriptors: np.ndarray, n0: int = dataset.N0,
                 max_pair: float = MAX_PAIR) -> list[int]:
    """Indices of ``n0`` tiles, most detailed first, each below ``max_pair`` SSCD to those kept."""
    order = sorted(range(len(tiles)), key=lambda i: -detail(tiles[i]))
    kept: list[int] = []
    for i in order:
        if all(float(descriptors[i] @ descriptors[j]) < max_pair for j in kept):
            kept.append(i)
        if len(kept) == n0:
            return sorted(kept)
    raise ValueError(f"only {len(kept)} of {len(tiles)} tiles are mutually below SSCD {max_pair}")


def build(out: pathlib.Path = dataset.CONCEPTS, descriptor=None) -> dict[str, float]:
    """Write every concept set; returns each set's largest pairwise SSCD."""
    from ..clustering import load_descriptor

    descriptor = descriptor or load_descriptor()
    worst = {}
    credits = ["# Concept sets: sources and licences", "",
               "Each set is five non-overlapping 64 px tiles of one photograph (`python -m "
               "finextract.miniature.concepts`).", "",
               "| set | caption | photograph | author | licence | package |", "|---|---|---|---|---|---|"]
    for c in dataset.CONCEPT_SOURCES:
        photo = c.source.load()
        tiles = dataset.concept_tiles(photo, 0.5)
        if len(tiles) < 6:
            tiles = dataset.concept_tiles(photo, 1 / 3)
        desc = descriptor.embed(np.stack(tiles)).numpy()
        keep = choose_views(tiles, desc)
        folder = out / c.concept
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.png"):
            old.unlink()
        for k, i in enumerate(keep):
            Image.fromarray((tiles[i] * 255).round().astype(np.uint8)).save(folder / f"{k:02d}.png")
        (folder / "caption.txt").write_text(c.caption + "\n")
        sims = desc[keep] @ desc[keep].T
        worst[c.concept] = float((sims - np.eye(len(keep)) * 2).max())
        credits.append(f"| {c.concept} | {c.caption} | {c.source.location.replace('skimage:', 'skimage.data.')} | "
                       f"{c.source.credit} | {c.source.licence} | {c.source.package} |")
        print(f"{c.concept}: tiles {keep} of {len(tiles)}, max pairwise SSCD {worst[c.concept]:.3f}")
    (out / "CREDITS.md").write_text("\n".join(credits) + "\n")
    return worst


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m finextract.miniature.concepts", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=pathlib.Path, default=dataset.CONCEPTS)
    build(p.parse_args(argv).out)


if __name__ == "__main__":
    main()
