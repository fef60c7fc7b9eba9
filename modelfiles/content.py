"""What a fine-tune changed, read from the files: tensor by tensor, per component, never all at once.

Guidance between a base and a "fine-tune" that holds the base's own weights extracts nothing, and
names and hashes do not show it: a base re-saved with new metadata is a different file with the
same tensors, and a LoRA whose up weights are zero applies to every layer and moves none. So the
loader compares what the files hold. Three rules keep the comparison honest and cheap:

- only tensors present in both files are compared, read from the files themselves: a host may
  build modules with weights the file lacks (ComfyUI leaves an SD1.5 CLIP's ``text_projection``
  uninitialised when the file has none), and such memory differs between two loads of one file;
- one tensor in memory at a time (read, not mapped: :class:`.reading.TensorFile`), so a pair of
  large checkpoints costs two tensors;
- the size of a change is a relative norm per component, ``‖W_ft − W_base‖ / ‖W_base‖`` over all
  of the component's tensors, so a user sees how far the fine-tune moved the UNet and the text
  encoder(s), and "unchanged" means exactly zero.

Components are named by the caller with the key prefixes of its model family (the host knows
them); plain torch, no host import.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Iterable, Iterator, Mapping

import torch

from .reading import SAFETENSORS_SUFFIXES, TensorFile

UNET = "UNet"
TEXT_ENCODER = "text encoder"
COMPONENTS = (UNET, TEXT_ENCODER)
"""What guidance reads: the denoiser and the text encoder(s) that condition it. Other tensors of a
checkpoint (the VAE) do not change what guidance extracts and are not compared."""


@contextlib.contextmanager
def open_tensors(path: str) -> Iterator[Mapping[str, torch.Tensor]]:
    """The tensors of a model file by name, loaded one at a time: safetensors read tensor by tensor
    (:class:`.reading.TensorFile`, not mapped); a pickled checkpoint (.ckpt, .pt) memory-mapped
    with ``weights_only`` (its ``state_dict`` entry when it wraps one, as training frameworks save
    them)."""
    if str(path).endswith(SAFETENSORS_SUFFIXES):
        with TensorFile(path) as tensors:
            yield tensors
        return
    loaded = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    yield loaded.get("state_dict", loaded)


def component_of(key: str, prefixes: Mapping[str, Iterable[str]]) -> str | None:
    """The component whose longest matching prefix starts ``key``, or None (not compared)."""
    best, length = None, -1
    for component, starts in prefixes.items():
        for start in starts:
            if key.startswith(start) and len(start) > length:
                best, length = component, len(start)
    return best


def squared_norm(t: torch.Tensor) -> float:
    """Squared Frobenius norm, in float64 (one tensor of a checkpoint holds millions of values)."""
    flat = t.to(torch.float64).reshape(-1)
    return float(flat @ flat)


@dataclasses.dataclass
class Change:
    """Squared norms per component: of the change (``delta``) and of the base (``base``)."""

    delta: dict[str, float] = dataclasses.field(default_factory=lambda: dict.fromkeys(COMPONENTS, 0.0))
    base: dict[str, float] = dataclasses.field(default_factory=lambda: dict.fromkeys(COMPONENTS, 0.0))
    compared: int = 0
    """Tensors compared (present in both files with one shape), all components together."""
    reshaped: int = 0
    """Tensors present in both files with different shapes: changed, but by no measurable norm."""

    def relative(self) -> dict[str, float]:
        """``‖ΔW‖ / ‖W_base‖`` per component (0.0 for a component that is unchanged or absent)."""
        return {c: math.sqrt(self.delta[c] / self.base[c]) if self.base[c] > 0 else 0.0
                for c in COMPONENTS}

    @property
    def unchanged(self) -> bool:
        return not self.reshaped and not any(self.delta.values())


def _by_name(tensors: Mapping[str, torch.Tensor], prefixes: Mapping[str, Iterable[str]]) -> dict:
    """``{(component, name below the component's prefix): key}`` of a file's tensors: the same
    weight has one name in a checkpoint (``model.diffusion_model.x``) and in a diffusion-model-only
    file (``x``)."""
    out = {}
    for key in tensors:
        component = component_of(key, prefixes)
        if component is not None:
            start = max((p for p in prefixes[component] if key.startswith(p)), key=len)
            out[(component, key[len(start):])] = key
    return out


def compare_files(base_path: str, finetuned_path: str, prefixes: Mapping[str, Iterable[str]],
                  finetuned_prefixes: Mapping[str, Iterable[str]] | None = None) -> Change:
    """How far the fine-tuned file moved each component of the base, over the tensors both files
    hold under one name and shape (a tensor of another shape is counted in ``reshaped``). Names are
    read below each component's prefix, ``prefixes`` for the base and ``finetuned_prefixes`` (the
    same if None) for the fine-tune, so a checkpoint compares with a diffusion-model-only file."""
    change = Change()
    with open_tensors(base_path) as base, open_tensors(finetuned_path) as finetuned:
        base_names = _by_name(base, prefixes)
        ft_names = _by_name(finetuned, prefixes if finetuned_prefixes is None else finetuned_prefixes)
        for name in sorted(set(base_names) & set(ft_names)):
            component = name[0]
            a, b = base[base_names[name]], finetuned[ft_names[name]]
            if not (a.is_floating_point() and b.is_floating_point()):
                continue
            if a.shape != b.shape:
                change.reshaped += 1
                continue
            change.compared += 1
            change.base[component] += squared_norm(a)
            if a.dtype != b.dtype or not torch.equal(a, b):
                change.delta[component] += squared_norm(b.to(torch.float64) - a.to(torch.float64))
    return change


def component_norms(path: str, prefixes: Mapping[str, Iterable[str]]) -> dict[str, float]:
    """Squared norm of each component's float tensors in one file (a LoRA's denominators)."""
    norms = dict.fromkeys(COMPONENTS, 0.0)
    with open_tensors(path) as tensors:
        for key in tensors:
            component = component_of(key, prefixes)
            if component is not None:
                tensor = tensors[key]
                if tensor.is_floating_point():
                    norms[component] += squared_norm(tensor)
    return norms


def describe(relative: Mapping[str, float | None]) -> str:
    """One line a person reads: how far each component moved, or that it is unchanged; None means
    the change could not be measured (a weight form the pack does not read)."""
    parts = []
    for component, value in relative.items():
        if value is None:
            parts.append(f"{component} changed by an unmeasured amount")
        elif value == 0:
            parts.append(f"{component} unchanged")
        else:
            parts.append(f"{component} fine-tuned (‖ΔW‖/‖W‖ = {value:.3g})")
    return ", ".join(parts)
