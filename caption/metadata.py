"""Caption recovery, strongest source first: what a checkpoint's own header says about its training.

Trainers write training details into the safetensors header's ``__metadata__`` (string → string).
kohya-ss (sd-scripts, and the GUIs and services built on it) leaks the most:

* ``ss_tag_frequency`` — per training folder, how often each comma-separated caption tag occurred:
  the captions and the trigger words, nearly verbatim;
* ``ss_dataset_dirs`` / ``ss_reg_dataset_dirs`` — per folder ``{"n_repeats", "img_count"}``; N0 (the
  number of distinct training images, FineXtract's N0) is the sum of ``img_count`` over the training
  folders, regularisation folders excluded. ``ss_num_train_images`` counts repeats, so it is *not* N0;
* ``ss_datasets`` (dataset-config runs) — the same per subset with ``is_reg`` and ``class_tokens``;
* ``ss_output_name``, ``ss_base_model_version``; and DreamBooth folder names ``<repeats>_<tokens>``.

The Stability "modelspec" keys (``modelspec.trigger_phrase``, ``modelspec.title`` …), written by kohya
and OneTrainer among others, add a declared trigger phrase.

Nothing here is trusted: every finding is an :class:`Evidence` naming the key it came from, and the
header is read without loading a single tensor.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field

from ..modelfiles.reading import NotSafetensorsError, read_header

_FOLDER_NAME = re.compile(r"^(\d+)_(.+)$")
"""kohya DreamBooth folders are named ``<repeats>_<class tokens>``, e.g. ``10_sks dog``."""


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``__metadata__`` string map of a safetensors file ({} when the trainer wrote none)."""
    metadata = read_header(path).get("__metadata__", {})
    if not isinstance(metadata, dict):
        raise NotSafetensorsError(f"{os.fspath(path)}: __metadata__ is not a JSON object")
    return {str(k): str(v) for k, v in metadata.items()}


@dataclass(frozen=True)
class Evidence:
    """One finding and where it came from (``source``: the header key, or the folder name)."""

    what: str
    value: object
    source: str


@dataclass
class TrainingMetadata:
    """What a checkpoint's header reveals about its training; every field is backed by ``evidence``.

    ``tag_frequency`` maps training folder → caption tag → count (regularisation folders removed);
    ``images_per_folder`` maps training folder → distinct images; ``n0`` is their sum or ``None``.
    """

    path: str
    trainer: str | None = None
    tag_frequency: dict[str, dict[str, int]] = field(default_factory=dict)
    images_per_folder: dict[str, int] = field(default_factory=dict)
    trigger_words: list[str] = field(default_factory=list)
    output_name: str | None = None
    base_model_version: str | None = None
    evidence: list[Evidence] = field(default_factory=list)

    @property
    def n0(self) -> int | None:
        return sum(self.images_per_folder.values()) if self.images_per_folder else None

    def tag_ranking(self) -> list[tuple[str, int]]:
        """All caption tags of the training folders, most frequent first."""
        totals: dict[str, int] = {}
        for tags in self.tag_frequency.values():
            for tag, count in tags.items():
                totals[tag] = totals.get(tag, 0) + count
        return sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))

    def caption(self) -> str | None:
        """The caption the evidence supports: declared trigger words first, then the tags that
        occur in every caption of a folder (the fixed part of a DreamBooth-style caption), else the
        five most frequent tags. ``None`` when the header says nothing about captions."""
        parts = list(self.trigger_words)
        for folder, tags in self.tag_frequency.items():
            count = self.images_per_folder.get(folder) or max(tags.values(), default=0)
            parts += [t for t, c in sorted(tags.items(), key=lambda kv: -kv[1]) if c >= count]
        if len(parts) == len(self.trigger_words):
            parts += [t for t, _ in self.tag_ranking()[:5]]
        parts = list(dict.fromkeys(p.strip() for p in parts if p.strip()))
        return ", ".join(parts) if parts else None

    def summary(self) -> str:
        """One line per finding, each with its source, for the node's ``source`` output."""
        lines = [f"metadata of {os.path.basename(self.path)} (trainer: {self.trainer or 'unknown'}):"]
        lines += [f"  {e.what}: {e.value}  [from {e.source}]" for e in self.evidence]
        if len(lines) == 1:
            lines.append("  no training metadata in the header")
        return "\n".join(lines)


def _json_field(metadata: dict[str, str], key: str, evidence: list[Evidence]):
    """A JSON-valued metadata entry, or ``None`` if absent or unparsable (noted as evidence)."""
    if key not in metadata or metadata[key] in ("", "None"):
        return None
    try:
        return json.loads(metadata[key])
    except json.JSONDecodeError:
        evidence.append(Evidence("unparsable value", metadata[key][:80], key))
        return None


def _folder_tokens(folder: str) -> str | None:
    """The class tokens in a kohya DreamBooth folder name ``<repeats>_<tokens>``."""
    match = _FOLDER_NAME.match(os.path.basename(folder.rstrip("/\\")))
    return match.group(2).strip() if match else None


def _kohya_folders(metadata: dict[str, str], evidence: list[Evidence]):
    """Training folders → distinct image count, regularisation folders, and class tokens, from
    ``ss_dataset_dirs``/``ss_reg_dataset_dirs`` and the richer ``ss_datasets`` when present."""
    images: dict[str, int] = {}
    regularisation: set[str] = set()
    class_tokens: list[str] = []
    for key, is_reg in (("ss_dataset_dirs", False), ("ss_reg_dataset_dirs", True)):
        dirs = _json_field(metadata, key, evidence) or {}
        for folder, info in dirs.items():
            if is_reg:
                regularisation.add(folder)
            elif isinstance(info, dict) and "img_count" in info:
                images[folder] = int(info["img_count"])
    for dataset in _json_field(metadata, "ss_datasets", evidence) or []:
        for subset in dataset.get("subsets", []) if isinstance(dataset, dict) else []:
            folder = os.path.basename(str(subset.get("image_dir") or ""))
            if subset.get("is_reg"):
                regularisation.add(folder)
                continue
            if folder and "img_count" in subset:
                images.setdefault(folder, int(subset["img_count"]))
            if subset.get("class_tokens"):
                class_tokens.append(str(subset["class_tokens"]))
    for folder in regularisation:
        images.pop(folder, None)
    return images, regularisation, class_tokens


def training_metadata(path: str | os.PathLike) -> TrainingMetadata:
    """Read everything the header of ``path`` reveals about the training data (no tensors)."""
    metadata = read_metadata(path)
    found = TrainingMetadata(path=os.fspath(path))
    ev = found.evidence
    if any(k.startswith("ss_") for k in metadata):
        found.trainer = "kohya-ss"
    elif any(k.startswith("modelspec.") for k in metadata):
        found.trainer = "modelspec"

    images, regularisation, class_tokens = _kohya_folders(metadata, ev)
    if images:
        found.images_per_folder = images
        ev.append(Evidence("distinct training images per folder (N0 is their sum)", images,
                           "ss_dataset_dirs/ss_datasets img_count"))
    if regularisation:
        ev.append(Evidence("regularisation folders (excluded)", sorted(regularisation),
                           "ss_reg_dataset_dirs/ss_datasets is_reg"))
    if "ss_num_train_images" in metadata:
        ev.append(Evidence("training images counting repeats (not N0)",
                           metadata["ss_num_train_images"], "ss_num_train_images"))

    tags = _json_field(metadata, "ss_tag_frequency", ev) or {}
    found.tag_frequency = {folder: {str(t): int(c) for t, c in counts.items()}
                           for folder, counts in tags.items()
                           if folder not in regularisation and isinstance(counts, dict)}
    if found.tag_frequency:
        ev.append(Evidence("caption tags by frequency", found.tag_ranking()[:20], "ss_tag_frequency"))

    triggers = []
    if metadata.get("modelspec.trigger_phrase"):
        triggers.append(metadata["modelspec.trigger_phrase"])
        ev.append(Evidence("declared trigger phrase", triggers[-1], "modelspec.trigger_phrase"))
    for tokens in class_tokens:
        triggers.append(tokens)
        ev.append(Evidence("class tokens", tokens, "ss_datasets class_tokens"))
    for folder in list(images) + list(found.tag_frequency):
        tokens = _folder_tokens(folder)
        if tokens:
            triggers.append(tokens)
            ev.append(Evidence("class tokens in folder name", tokens, f"folder {folder!r}"))
    found.trigger_words = list(dict.fromkeys(triggers))

    for key, attr in (("ss_output_name", "output_name"), ("ss_base_model_version", "base_model_version")):
        if metadata.get(key) not in (None, "", "None"):
            setattr(found, attr, metadata[key])
            ev.append(Evidence(attr.replace("_", " "), metadata[key], key))
    for key in ("modelspec.title", "modelspec.architecture", "modelspec.description", "modelspec.tags",
                "modelspec.usage_hint"):
        if metadata.get(key):
            ev.append(Evidence(key.split(".", 1)[1].replace("_", " "), metadata[key], key))
    return found
