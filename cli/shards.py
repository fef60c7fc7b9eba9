"""Split the N generations of one audit over machines, and put them back together.

Generation is the expensive part of FineXtract (N = 50·N0 images, two model evaluations per
step); clustering needs all N at once. So ``--shard i/n`` makes only the images
``shard_indices(N, i, n)`` of the run and saves their latents with the run's parameters; a merge
checks that the shards belong to one run and cover ``range(N)`` exactly once, and returns the
latents in image order. Since image i depends only on (seed, i) (:mod:`..sampling.driver`), the
merged tensor is the one an unsharded run makes, bit for bit, and the clustering that follows
cannot tell the difference.
"""
from __future__ import annotations

import json
import pathlib
from dataclasses import dataclass

import torch
from safetensors.torch import save

from ..modelfiles import atomic_write, check_safetensors, load_safetensors
from ..sampling.driver import shard_indices

FORMAT = "finextract-shard/1"


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` (0-based: shards 0/4 … 3/4) → (i, n)."""
    try:
        shard, num = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard takes i/n with integers, e.g. 0/4; got {text!r}") from None
    shard_indices(0, shard, num)  # raises on 0 <= i < n violated
    return shard, num


def save_latents(path: pathlib.Path, latents: torch.Tensor, indices: list[int], metadata: dict[str, str]):
    """Latents, their image indices and string metadata in one safetensors file, written
    atomically (:func:`..modelfiles.atomic_write`): a process killed or a disk filling up
    mid-write leaves what was there before, never a half-written file."""
    data = save({"latents": latents.contiguous(), "indices": torch.tensor(indices, dtype=torch.int64)},
                metadata=metadata)
    with atomic_write(path) as f:
        f.write(data)


def load_latents(path: pathlib.Path, fmt: str) -> tuple[torch.Tensor, list[int], dict[str, str]]:
    """(latents, indices, metadata) of a file :func:`save_latents` wrote with metadata format
    ``fmt``; ValueError for any other file."""
    metadata = check_safetensors(path).get("__metadata__") or {}
    if metadata.get("format") != fmt:
        raise ValueError(f"{path} is not a {fmt} file (format {metadata.get('format')!r})")
    tensors = load_safetensors(path)
    return tensors["latents"], tensors["indices"].tolist(), metadata


@dataclass
class Shard:
    latents: torch.Tensor
    indices: list[int]
    run: dict
    shard: int
    num_shards: int


def save_shard(path: pathlib.Path, latents: torch.Tensor, run: dict, shard: int, num_shards: int):
    """Save the latents of shard ``shard`` of the run described by ``run`` (a JSON-able dict of
    everything that decides the images: model hashes, caption, N, seed, method, steps …)."""
    indices = shard_indices(run["n"], shard, num_shards)
    if latents.shape[0] != len(indices):
        raise ValueError(f"shard {shard}/{num_shards} of N={run['n']} has {len(indices)} images, "
                         f"got {latents.shape[0]} latents")
    save_latents(path, latents, indices, {"format": FORMAT, "run": json.dumps(run, sort_keys=True),
                                          "shard": str(shard), "num_shards": str(num_shards)})


def load_shard(path: pathlib.Path) -> Shard:
    latents, indices, metadata = load_latents(path, FORMAT)
    return Shard(latents, indices, json.loads(metadata["run"]), int(metadata["shard"]), int(metadata["num_shards"]))


def shard_run(path: pathlib.Path) -> dict | None:
    """The run identity a shard file was saved with, read from its header alone (no tensors);
    None when there is no such file or it is not a whole shard file (a re-run then makes it)."""
    try:
        metadata = check_safetensors(path).get("__metadata__") or {}
    except (OSError, ValueError):
        return None
    return json.loads(metadata["run"]) if metadata.get("format") == FORMAT else None


def merge_shards(paths) -> tuple[torch.Tensor, dict]:
    """Latents of the whole run in image order, and the run's parameters. Refuses shards of
    different runs, duplicates, and an incomplete set (naming the missing shards)."""
    shards = [load_shard(p) for p in paths]
    if not shards:
        raise ValueError("no shard files to merge")
    run, num = shards[0].run, shards[0].num_shards
    for path, s in zip(paths, shards):
        if s.run != run or s.num_shards != num:
            raise ValueError(f"{path} belongs to another run than {paths[0]}: "
                             f"{json.dumps(s.run, sort_keys=True)} vs {json.dumps(run, sort_keys=True)}")
    seen = [s.shard for s in shards]
    duplicates = sorted({i for i in seen if seen.count(i) > 1})
    missing = sorted(set(range(num)) - set(seen))
    if duplicates or missing:
        raise ValueError(f"shards of {num}: missing {missing}, duplicated {duplicates}")
    latents = torch.empty((run["n"], *shards[0].latents.shape[1:]), dtype=shards[0].latents.dtype)
    for s in shards:
        latents[s.indices] = s.latents
    return latents, run


RUN_KEYS_NOT_IDENTITY = ("start", "count", "batch_size")
"""Generation-record fields that differ between shards of one run."""


def run_identity(record: dict, n: int, caption: str, conditioning: dict | None = None) -> dict:
    """What makes saved images parts of one run: N, the caption (the sampler's record holds the
    files, hashes and settings but not the text behind the conditioning), the generation record
    minus the range and batching of the call that made them, and, where the model has them, the
    text-encoder and VAE files given beside a diffusion-model-only base and FLUX.1's guidance
    value (``conditioning``: :mod:`.encoders`' record; the key is left out when empty, so a
    checkpoint's run keeps the identity it had before these existed)."""
    extra = {"conditioning": conditioning} if conditioning else {}
    return {"n": n, "caption": caption, **extra,
            **{k: v for k, v in record.items() if k not in RUN_KEYS_NOT_IDENTITY}}


def generation_indices(n: int, shard: tuple[int, int] | None) -> list[int]:
    return list(range(n)) if shard is None else shard_indices(n, *shard)


def contiguous_runs(indices: list[int]) -> list[tuple[int, int]]:
    """``[(start, count), …]`` covering ``indices`` (sorted), for the sampler's start/count."""
    runs = []
    for i in indices:
        if runs and runs[-1][0] + runs[-1][1] == i:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((i, 1))
    return runs


def shard_path(out: pathlib.Path, shard: tuple[int, int]) -> pathlib.Path:
    return out / "shards" / f"shard-{shard[0]:04d}-of-{shard[1]:04d}.safetensors"


def save_generation(out: pathlib.Path, latents, identity: dict, shard: tuple[int, int]):
    path = shard_path(out, shard)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_shard(path, latents, identity, *shard)
    return path


def load_generation(out: pathlib.Path):
    paths = sorted((out / "shards").glob("shard-*.safetensors"))
    if not paths:
        raise SystemExit(f"--merge: no shard files in {out / 'shards'}")
    return merge_shards(paths)
