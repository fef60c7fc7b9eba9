"""Generations kept on disk as they are made, so that a stopped audit resumes where it stopped.

An audit of a real fine-tune generates thousands of images on a GPU; Ctrl-C, a killed job or a
full disk must not throw that work away. So ``finextract audit`` saves every chunk of latents as
soon as it is made, in ``<out>/<name>/generation/chunk-<first index>.safetensors`` (latents, their
image indices, and the run's identity: file hashes, caption, N, seed, method, w', k, sampler,
steps, size), each file written atomically (:func:`.shards.save_latents`). The same command run
again loads the chunks of its own run and generates only the missing indices; since image i
depends only on (seed, i) (:mod:`..sampling.driver`), the finished run is the uninterrupted one.

Chunks of another run (a changed setting, another file) are never mixed in: :meth:`load` refuses
them, naming what differs, and the user picks a fresh ``--out`` or ``--restart``.
"""
from __future__ import annotations

import json
import pathlib

import torch
from safetensors import SafetensorError

from .shards import load_latents, save_latents

FORMAT = "finextract-chunk/1"


def differences(saved: dict, now: dict) -> str:
    """What differs between two run identities, in words: ``w 5.0 saved, 4.0 now; models``."""
    keys = sorted(k for k in saved.keys() | now.keys() if saved.get(k) != now.get(k))
    return "; ".join(k if isinstance(saved.get(k), (dict, list)) or isinstance(now.get(k), (dict, list))
                     else f"{k} {saved.get(k)!r} saved, {now.get(k)!r} now" for k in keys)


class GenerationStore:
    """The saved chunks of one model's run in ``folder``; ``identity`` is the run's
    (:func:`.shards.run_identity`)."""

    def __init__(self, folder: pathlib.Path, identity: dict):
        self.folder, self.identity = folder, identity

    def paths(self) -> list[pathlib.Path]:
        return sorted(self.folder.glob("chunk-*.safetensors"))

    def discard(self) -> int:
        """Delete every saved chunk (``--restart``); returns how many there were."""
        paths = self.paths()
        for path in paths:
            path.unlink()
        return len(paths)

    def load(self, wanted: list[int]) -> dict[int, torch.Tensor]:
        """The saved latents of the images ``wanted`` (index → latent). Chunks holding other
        indices are left alone (another shard's, in a shared folder); a chunk of another run or
        an unreadable file stops the audit, saying what to do."""
        wanted, kept = set(wanted), {}
        for path in self.paths():
            try:
                latents, indices, metadata = load_latents(path, FORMAT)
                run = json.loads(metadata["run"])
            except (OSError, ValueError, KeyError, SafetensorError) as exc:
                raise SystemExit(f"{path} is not a readable chunk of saved images ({exc}): delete it, "
                                 "or add --restart to discard the saved images and start over") from None
            if run != self.identity:
                raise SystemExit(
                    f"{self.folder} holds images of another run than this command ({differences(run, self.identity)}; "
                    f"in {path.name}): they are not mixed in. Use a fresh --out, or add --restart to "
                    "discard them and start over")
            kept.update((i, latent) for i, latent in zip(indices, latents) if i in wanted)
        return kept

    def save(self, indices: list[int], latents: torch.Tensor) -> pathlib.Path:
        """Save one chunk (atomically); OSError (a full disk …) leaves earlier chunks intact."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"chunk-{indices[0]:07d}.safetensors"
        save_latents(path, latents, indices, {"format": FORMAT, "run": json.dumps(self.identity, sort_keys=True)})
        return path
