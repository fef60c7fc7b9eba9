"""Provenance of a run: which files (by sha256) and which settings produced a set of images.

An audit's evidence is only as good as its record: a rights holder must be able to say "these
images came from this exact base and this exact fine-tune with these settings" and reproduce any
image alone (see :mod:`..sampling.driver`). Hashes are cached per (path, size, mtime) because a
checkpoint is gigabytes and a graph reloads it often.
"""
from __future__ import annotations

import hashlib
import os

import torch

from .. import __version__
from .content import open_tensors

_SHA_CACHE: dict[tuple[str, int, int], str] = {}
_CONTENT_CACHE: dict[tuple[str, int, int], str] = {}

PER_IMAGE_SEED_RULE = (
    "image i of a run with seed s starts from torch.randn on a CPU generator seeded with "
    "derive_seed(s, i) = int.from_bytes(sha256(f'finextract:{s}:{i}')[:8], 'little') & (2**63 - 1); "
    "stochastic samplers draw image i's later noise from a generator seeded with "
    "derive_seed(derive_seed(s, i), -1); a sampler that neither takes such a noise source nor is "
    "deterministic runs "
    "one image at a time with seed derive_seed(s, i)")


def file_identity(path: str) -> tuple[str, int, int]:
    """(real path, size, mtime) of a file: what tells a process that a file it read is unchanged
    (its hashes below, a base checkpoint kept loaded) without reading it again."""
    real = os.path.realpath(path)
    stat = os.stat(real)
    return real, stat.st_size, stat.st_mtime_ns


def _cached(cache: dict, path: str, compute) -> str:
    """``compute(real path)``, once per :func:`file_identity`."""
    key = file_identity(path)
    if key not in cache:
        cache[key] = compute(key[0])
    return cache[key]


def _sha256_of_bytes(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _sha256_of_tensors(path: str) -> str:
    digest = hashlib.sha256()
    with open_tensors(path) as tensors:
        for name in sorted(tensors):
            tensor = tensors[name]
            digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
            digest.update(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def file_sha256(path: str) -> str:
    """sha256 of a file, computed once per (real path, size, mtime)."""
    return _cached(_SHA_CACHE, path, _sha256_of_bytes)


def content_sha256(path: str) -> str:
    """sha256 of what a model file holds: every tensor's name, dtype, shape and bytes, in name
    order, without the metadata or the container. A base re-saved with new metadata (or from
    .ckpt to .safetensors) keeps its content hash while its file sha256 changes. Cached like
    :func:`file_sha256`; reads one tensor at a time."""
    return _cached(_CONTENT_CACHE, path, _sha256_of_tensors)


def file_record(path: str, name: str, **extra) -> dict:
    """JSON-able description of one model file: its name as the user picked it, size, sha256 of
    the file and of its tensors (:func:`content_sha256`)."""
    return {"file": name, "bytes": os.path.getsize(path), "sha256": file_sha256(path),
            "content_sha256": content_sha256(path), **extra}


def generation_record(models: dict, *, method: str, w: float, k: float, seed: int, start: int, count: int,
                      steps: int, sampler: str, scheduler: str, width: int, height: int,
                      batch_size: int, latent_shape: list[int]) -> dict:
    """The JSON-able record a LATENT of generated images carries under its ``finextract`` key.

    Images are indices ``start .. start + count - 1`` of the run ``seed``; ``batch_size`` is the
    chunk size actually used (it never changes an image)."""
    return {
        "pack_version": __version__, "models": models, "method": method, "w": w, "k": k,
        "seed": seed, "start": start, "count": count, "steps": steps, "sampler": sampler, "scheduler": scheduler,
        "width": width, "height": height, "batch_size": batch_size,
        "latent_shape": list(latent_shape), "per_image_seed_rule": PER_IMAGE_SEED_RULE,
    }
