"""Caption recovery, strongest source first: what a checkpoint's own header says about its training.

Trainers write training details into the safetensors header's ``__metadata__`` (string → string).
What each trainer writes (read from their sources; :data:`TRAINERS` recognises them, first match wins):

* **kohya-ss sd-scripts** (and the GUIs and services built on it), for SD1.x/SDXL/SD3/FLUX alike —
  the most: ``ss_tag_frequency`` (per training folder, how often each comma-separated caption tag
  occurred: the captions and trigger words nearly verbatim); ``ss_dataset_dirs`` /
  ``ss_reg_dataset_dirs`` (per folder ``{"n_repeats", "img_count"}``: N0, FineXtract's number of
  distinct training images, is the sum of ``img_count`` over the training folders, regularisation
  folders excluded; ``ss_num_train_images`` counts repeats, so it is *not* N0); ``ss_datasets``
  (dataset-config runs: the same per subset with ``is_reg``, ``class_tokens``, ``caption_prefix`` /
  ``caption_suffix``, which trainers use to add the trigger word to every caption); DreamBooth folder
  names ``<repeats>_<tokens>``; ``ss_output_name``; ``ss_base_model_version`` (``sdxl_base_v1-0``,
  ``flux1``, SD3's ``5-large``/``5-medium``/``medium``) and the Stability "modelspec" keys
  (``modelspec.architecture``, ``modelspec.trigger_phrase`` …).
* **ai-toolkit** (ostris): ``software`` = ``{"name": "ai-toolkit", …}``, the job's ``name`` and
  ``version``, ``training_info`` (``{"step", "epoch"}``), ``ss_base_model_version`` (``sdxl_1.0``,
  ``flux.1``, ``sd_3`` …), ``ss_output_name``, and — only when a ``trigger_word`` was set — a
  synthetic ``ss_tag_frequency`` of ``{"1_<trigger>": {"<trigger>": 1}}`` "so auto1111 will pick it
  up": the trigger word, not caption counts. No image count.
* **OneTrainer**: modelspec keys, ``ot_branch`` / ``ot_revision``, and — only when its
  ``include_train_config`` is ``SETTINGS`` or ``ALL`` (default ``NONE``) — ``ot_config``, the
  training config as JSON. With ``ALL`` it holds the concepts (``name``, ``path``, ``type``:
  ``STANDARD`` / ``VALIDATION`` / ``PRIOR_PREDICTION``, ``enabled``, ``concept_stats.image_count``
  when the creator scanned the folder) and the sample prompts the creator checked the fine-tune with.
* **diffusers' training scripts** (``train_dreambooth_lora_flux.py`` …): ``format`` and, since
  diffusers 0.34, ``lora_adapter_metadata`` (the LoRA config: rank, alpha, target modules). No
  caption, N0 or trigger: the scripts put the instance prompt in the model card (README.md) beside
  the weights, not in the file.

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


def _json(value):
    try:
        return json.loads(value)
    except (TypeError, json.JSONDecodeError):
        return None


def _software(metadata: dict[str, str]) -> str | None:
    """The ``name`` in ai-toolkit's ``software`` entry (a JSON object), if any."""
    software = _json(metadata.get("software"))
    return software.get("name") if isinstance(software, dict) else None


TRAINERS = (
    # (trainer, what only its headers hold): the first that matches names the trainer. ai-toolkit
    # and OneTrainer also write ss_ keys (for A1111), so they come before kohya-ss.
    ("ai-toolkit", lambda m: _software(m) == "ai-toolkit"),
    ("OneTrainer", lambda m: any(k.startswith("ot_") for k in m)),
    ("kohya-ss", lambda m: any(k.startswith("ss_") for k in m)),
    ("diffusers", lambda m: "lora_adapter_metadata" in m),
    ("modelspec", lambda m: any(k.startswith("modelspec.") for k in m)),
)

BASE_MODELS = (
    # (pattern of ss_base_model_version / modelspec.architecture values, the family they name), in
    # the names nodes.pair.FAMILIES uses; values from kohya (sdxl_base_v1-0, flux1, 5-large),
    # ai-toolkit (sdxl_1.0, flux.1, sd_3), OneTrainer (sdxl_) and modelspec architectures.
    (re.compile(r"schnell"), "FLUX schnell"),
    (re.compile(r"^(sdxl|stable-diffusion-xl)"), "SDXL"),
    (re.compile(r"^(flux|chroma)"), "FLUX"),
    (re.compile(r"^(sd_?3|stable-diffusion-3|5-large|5-medium|medium|large)"), "SD3"),
    (re.compile(r"^(sd_v?2|stable-diffusion-v2)"), "SD2.x"),
    (re.compile(r"^(sd_v?1|stable-diffusion-v1)"), "SD1.x"),
)


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
    ``images_per_folder`` maps training folder (or OneTrainer concept) → distinct images; ``n0`` is
    their sum or ``None``; ``prompts`` are the creator's own sample prompts (OneTrainer)."""

    path: str
    trainer: str | None = None
    tag_frequency: dict[str, dict[str, int]] = field(default_factory=dict)
    images_per_folder: dict[str, int] = field(default_factory=dict)
    trigger_words: list[str] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    output_name: str | None = None
    base_model_version: str | None = None
    family: str | None = None
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
        five most frequent tags; with neither, the creator's first sample prompt. ``None`` when the
        header says nothing about captions."""
        parts = list(self.trigger_words)
        for folder, tags in self.tag_frequency.items():
            count = self.images_per_folder.get(folder) or max(tags.values(), default=0)
            parts += [t for t, c in sorted(tags.items(), key=lambda kv: -kv[1]) if c >= count]
        if len(parts) == len(self.trigger_words):
            parts += [t for t, _ in self.tag_ranking()[:5]]
        if not parts:
            parts = self.prompts[:1]
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
    """Training folders → distinct image count, regularisation folders, and (tokens, source) pairs
    that go into every caption of a subset (class tokens, caption prefix/suffix), from
    ``ss_dataset_dirs``/``ss_reg_dataset_dirs`` and the richer ``ss_datasets`` when present."""
    images: dict[str, int] = {}
    regularisation: set[str] = set()
    tokens: list[tuple[str, str, str]] = []
    for key, is_reg in (("ss_dataset_dirs", False), ("ss_reg_dataset_dirs", True)):
        dirs = _json_field(metadata, key, evidence) or {}
        for folder, info in dirs.items():
            if is_reg:
                regularisation.add(folder)
            elif isinstance(info, dict) and "img_count" in info:
                images[folder] = int(info["img_count"])
    for dataset in _json_field(metadata, "ss_datasets", evidence) or []:
        for subset in dataset.get("subsets", []) if isinstance(dataset, dict) else []:
            folder = os.path.basename(str(subset.get("image_dir") or subset.get("metadata_file") or ""))
            if subset.get("is_reg"):
                regularisation.add(folder)
                continue
            if folder and "img_count" in subset:
                images.setdefault(folder, int(subset["img_count"]))
            for field_name, what in (("class_tokens", "class tokens"),
                                     ("caption_prefix", "caption prefix (added to every caption)"),
                                     ("caption_suffix", "caption suffix (added to every caption)")):
                if subset.get(field_name):
                    tokens.append((str(subset[field_name]).strip(" ,"), what, f"ss_datasets {field_name}"))
    for folder in regularisation:
        images.pop(folder, None)
    return images, regularisation, tokens


def _ai_toolkit(metadata: dict[str, str], found: TrainingMetadata) -> None:
    """ai-toolkit's ``ss_tag_frequency`` is ``{"1_<trigger>": {"<trigger>": 1}}`` written from its
    ``trigger_word`` setting: a trigger word, not caption counts (and no folder, no N0)."""
    ev = found.evidence
    for folder, tags in (_json_field(metadata, "ss_tag_frequency", ev) or {}).items():
        for tag in tags if isinstance(tags, dict) else ():
            found.trigger_words.append(str(tag))
            ev.append(Evidence("trigger word (ai-toolkit writes its trigger_word setting as a one-tag "
                               "folder; not caption counts)", str(tag), "ss_tag_frequency"))
    ev.append(Evidence("software", metadata["software"], "software"))
    if metadata.get("name"):
        found.output_name = metadata["name"]
        ev.append(Evidence("job name", metadata["name"], "name"))
    info = _json(metadata.get("training_info"))
    if isinstance(info, dict):
        ev.append(Evidence("training steps / epochs", f"{info.get('step')} / {info.get('epoch')}", "training_info"))
    ev.append(Evidence("no image count", "ai-toolkit writes none: N0 unknown", "ss_* keys"))


def _one_trainer(metadata: dict[str, str], found: TrainingMetadata) -> None:
    """OneTrainer's ``ot_config``: enabled STANDARD concepts are the training images (VALIDATION and
    PRIOR_PREDICTION — its regularisation — are not), their ``concept_stats.image_count`` (present
    when the creator scanned the concept) N0; the enabled sample prompts are the creator's own."""
    ev = found.evidence
    ev.append(Evidence("OneTrainer revision", f"{metadata.get('ot_branch', '?')} {metadata.get('ot_revision', '?')}",
                       "ot_branch/ot_revision"))
    config = _json_field(metadata, "ot_config", ev)
    if not isinstance(config, dict):
        ev.append(Evidence("no training config", "include_train_config was NONE: no concepts, N0 or prompts",
                           "ot_config absent"))
        return
    concepts = config.get("concepts")
    if not concepts:
        ev.append(Evidence("no concepts", "include_train_config was SETTINGS (concepts not packed)", "ot_config"))
    for i, concept in enumerate(concepts or []):
        if not isinstance(concept, dict) or not concept.get("enabled", True):
            continue
        name = str(concept.get("name") or os.path.basename(str(concept.get("path", ""))) or f"concept {i}")
        kind = str(concept.get("type", "STANDARD"))
        if kind != "STANDARD":
            ev.append(Evidence(f"{kind} concept (excluded)", name, f"ot_config concepts[{i}].type"))
            continue
        count = (concept.get("concept_stats") or {}).get("image_count")
        if isinstance(count, int):
            found.images_per_folder[name] = count
            ev.append(Evidence(f"images of concept {name!r}", count, f"ot_config concepts[{i}].concept_stats.image_count"))
        else:
            ev.append(Evidence(f"concept {name!r}", "image count not recorded (stats never scanned)",
                               f"ot_config concepts[{i}]"))
    for i, sample in enumerate(config.get("samples") or []):
        if isinstance(sample, dict) and sample.get("enabled", True) and str(sample.get("prompt", "")).strip():
            found.prompts.append(str(sample["prompt"]).strip())
    if found.prompts:
        ev.append(Evidence("the creator's sample prompts", found.prompts[:5], "ot_config samples[].prompt"))


def _diffusers(metadata: dict[str, str], found: TrainingMetadata) -> None:
    config = _json_field(metadata, "lora_adapter_metadata", found.evidence) or {}
    ranks = {k: v for k, v in config.items() if k.endswith((".r", ".lora_alpha"))}
    found.evidence.append(Evidence("LoRA rank / alpha", ranks, "lora_adapter_metadata"))
    found.evidence.append(Evidence("no caption, N0 or trigger", "diffusers' scripts write the instance prompt "
                                   "into the model card (README.md), not the file", "header"))


def _kohya(metadata: dict[str, str], found: TrainingMetadata) -> None:
    ev = found.evidence
    images, regularisation, tokens = _kohya_folders(metadata, ev)
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
    for text, what, source in tokens:
        found.trigger_words.append(text)
        ev.append(Evidence(what, text, source))
    for folder in list(images) + list(found.tag_frequency):
        folder_tokens = _folder_tokens(folder)
        if folder_tokens:
            found.trigger_words.append(folder_tokens)
            ev.append(Evidence("class tokens in folder name", folder_tokens, f"folder {folder!r}"))
    if metadata.get("ss_output_name") not in (None, "", "None"):
        found.output_name = metadata["ss_output_name"]
        ev.append(Evidence("output name", metadata["ss_output_name"], "ss_output_name"))


READERS = {"kohya-ss": _kohya, "ai-toolkit": _ai_toolkit, "OneTrainer": _one_trainer, "diffusers": _diffusers}
"""What each trainer's own keys reveal; the modelspec keys and the base model are read for all."""


def training_metadata(path: str | os.PathLike) -> TrainingMetadata:
    """Read everything the header of ``path`` reveals about the training data (no tensors)."""
    metadata = read_metadata(path)
    found = TrainingMetadata(path=os.fspath(path))
    ev = found.evidence
    found.trainer = next((name for name, matches in TRAINERS if matches(metadata)), None)
    if found.trainer in READERS:
        READERS[found.trainer](metadata, found)
    if metadata.get("modelspec.trigger_phrase"):
        found.trigger_words.insert(0, metadata["modelspec.trigger_phrase"])
        ev.append(Evidence("declared trigger phrase", metadata["modelspec.trigger_phrase"], "modelspec.trigger_phrase"))
    found.trigger_words = list(dict.fromkeys(found.trigger_words))
    for key in ("ss_base_model_version", "modelspec.architecture"):
        value = metadata.get(key)
        if value in (None, "", "None"):
            continue
        if key == "ss_base_model_version":
            found.base_model_version = value
        family = next((fam for pattern, fam in BASE_MODELS if pattern.search(value.lower())), None)
        ev.append(Evidence("base model" + (f" ({family})" if family else ""), value, key))
        found.family = found.family or family
    for key in ("modelspec.title", "modelspec.description", "modelspec.tags", "modelspec.usage_hint"):
        if metadata.get(key):
            ev.append(Evidence(key.split(".", 1)[1].replace("_", " "), metadata[key], key))
    return found
