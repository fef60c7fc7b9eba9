"""SSCD descriptors of the pretraining world, shipped so that CI can tell whether the base draws it.

The pretraining photos come from Debian packages that a test machine need not have, and their
licences (GPL, CC BY-SA) make shipping the crops themselves awkward; 512 numbers per crop are
neither. ``python -m finextract.miniature.reference`` embeds ``PER_SOURCE`` crops of every
pretraining source (the first crops of :func:`dataset.pretraining_set`, i.e. images the base was
trained on) and writes ``weights/pretraining_reference.npz``: ``descriptors`` (n, 512) float16,
``thumbnails`` (n, 4, 4, 3) float16 (16×16-pixel means: colour layout, not content),
``source`` (n,) the index into :data:`dataset.PRETRAINING_SOURCES`, ``captions`` per source.
"""
from __future__ import annotations

import argparse
import pathlib

import numpy as np

from . import dataset

PATH = pathlib.Path(__file__).resolve().parent / "weights" / "pretraining_reference.npz"
PER_SOURCE = 16
THUMB = 4


def thumbnails(images) -> np.ndarray:
    """(n, 64, 64, 3) images → (n, THUMB, THUMB, 3) block means (float32)."""
    x = np.asarray(images, np.float32)
    n, h, w, c = x.shape
    return x.reshape(n, THUMB, h // THUMB, THUMB, w // THUMB, c).mean(axis=(2, 4))


def build(path: pathlib.Path = PATH, per_source: int = PER_SOURCE, descriptor=None) -> None:
    from ..clustering import load_descriptor

    descriptor = descriptor or load_descriptor()
    images, _, source = dataset.pretraining_set(per_source)
    desc = descriptor.embed(images).numpy().astype(np.float16)
    captions = np.array([dataset.caption_of(s) for s in dataset.PRETRAINING_SOURCES])
    np.savez_compressed(path, descriptors=desc, thumbnails=thumbnails(images).astype(np.float16),
                        source=source.astype(np.int16), captions=captions)
    print(f"wrote {path}: {len(desc)} descriptors of {len(captions)} sources")


def load(path: pathlib.Path = PATH) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(descriptors (n, 512) float32, source index (n,), caption per source)."""
    with np.load(path) as f:
        return f["descriptors"].astype(np.float32), f["source"].astype(int), f["captions"].tolist()


def load_thumbnails(path: pathlib.Path = PATH) -> np.ndarray:
    """(n, THUMB, THUMB, 3) float32, in the order of :func:`load`."""
    with np.load(path) as f:
        return f["thumbnails"].astype(np.float32)


def nearest_sources(images, descriptor, path: pathlib.Path = PATH) -> dict[str, np.ndarray]:
    """Which pretraining photo each image (n, 64, 64, 3) in [0, 1] looks like: the source of its
    nearest shipped crop by SSCD ("content") and by 4×4 colour layout ("colour"), and the colour
    distance to that crop ("colour_distance"). How the base is checked against its world."""
    desc, source, _ = load(path)
    thumbs = load_thumbnails(path).reshape(len(desc), -1)
    d = ((thumbnails(images).reshape(len(images), 1, -1) - thumbs[None]) ** 2).sum(-1)
    content = np.asarray(descriptor.embed(np.asarray(images, np.float32))) @ desc.T
    return {"content": source[content.argmax(axis=1)], "colour": source[d.argmin(axis=1)],
            "colour_distance": np.sqrt(d.min(axis=1))}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m finextract.miniature.reference", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=pathlib.Path, default=PATH)
    build(p.parse_args(argv).out)


if __name__ == "__main__":
    main()
