"""What ``finextract audit`` is given, checked whole before any work.

An audit's first expensive step (importing ComfyUI, loading checkpoints, then hours of sampling)
must not start on inputs that will fail later: so every path, count and threshold is checked here,
without ComfyUI, and every problem is reported at once, one line each naming the argument (or the
manifest row) and the file, what is wrong and what to do. Nothing is written before the check
passes; the output folder is probed for writing, not created.
"""
from __future__ import annotations

import csv
import dataclasses
import importlib.util
import pathlib

from .. import host
from ..modelfiles import CHECKPOINT, LORA, LORA_SLOTS, OTHER, TEXT_ENCODER_FILE, VAE, kind_of, model_file_problem
from . import UsageError
from .demo import writable_problem
from .encoders import CLIP_LOADERS, FIX_CLIP, FIX_VAE
from .pipeline import ModelSpec
from .shards import parse_shard

MANIFEST_COLUMNS = ("name", "base", "finetuned", "lora", "train", "caption", "clip", "clip_type", "vae")
REQUIRED_COLUMNS = ("name", "base", "train")

SEED_MAX = 0xFFFFFFFFFFFFFFFF
RANGES = {"steps": (1, 1000, "the paper samples 50 DDIM steps"),
          "batch_size": (1, 256, "it never changes an image, only memory"),
          "seed": (0, SEED_MAX, "any run seed")}
"""Integer options and the bounds of the sampler node's inputs they feed (ComfyUI checks those
only for a prompt, not for a node run as a library)."""


class AuditArgumentError(UsageError):
    """The audit's inputs, all that is wrong with them (one line each)."""


def parse_lora(text: str) -> tuple[pathlib.Path, float]:
    """``FILE[:STRENGTH]`` → (file, strength); ValueError says what is wrong."""
    path, colon, strength = text.rpartition(":")
    if not colon:
        return pathlib.Path(text), 1.0
    try:
        return pathlib.Path(path), float(strength)
    except ValueError:
        raise ValueError(f"strength {strength!r} is not a number; write FILE or FILE:STRENGTH, "
                         f"e.g. mine.safetensors:0.8") from None


def _label(row: str, field: str) -> str:
    """How a message names a field: ``--field`` for a model given by flags, else the manifest
    row's column."""
    return f"{row} {field}" if row else "--" + field.replace("_", "-")


FIELD_KINDS = {"base": (CHECKPOINT, OTHER), "finetuned": (CHECKPOINT, OTHER), "clip": (TEXT_ENCODER_FILE,),
               "vae": (VAE,)}
"""What each model file may hold (:func:`..modelfiles.file_kind`): a base or full fine-tune is a
checkpoint or a diffusion model alone (any other file goes to the pair loader as one, which
refuses what ComfyUI recognises no diffusion model in)."""
KIND_FIELDS = {LORA: "lora", CHECKPOINT: "base", TEXT_ENCODER_FILE: "clip", VAE: "vae", OTHER: "base"}
HOLDS = {LORA: "a LoRA", CHECKPOINT: "a checkpoint (a diffusion model with its text encoders and VAE)",
         TEXT_ENCODER_FILE: "a text encoder", VAE: "a VAE",
         OTHER: "none of the text encoders or VAEs ComfyUI's loaders read (CLIP's text_model.encoder.layers.N, "
                "OpenCLIP's transformer.resblocks.N, T5's encoder.block.N, an AutoencoderKL's decoder.conv_in): "
                "a diffusion model?"}
WANTED = {"base": "a base model", "finetuned": "a fine-tuned model", "clip": "a text encoder", "vae": "a VAE"}


def _kind_problems(spec: ModelSpec, label, unreadable: set) -> list[str]:
    """Files that hold something else than their field needs, each named with what it holds and
    where it goes; a diffusion-model-only base without text-encoder or VAE files. ``unreadable``:
    the files that cannot be read (said already)."""
    problems, kinds = [], {}
    for field, path in spec.files():
        if field == "lora" or path in unreadable:
            continue  # LoRAs: the pair loader counts what applies and names the family it fits
        found = kind_of(path)
        kinds[field] = found and found[0]
        if found is not None and found[0] not in FIELD_KINDS[field]:
            kind, example = found
            problems.append(f"{label(field)} {path}: holds {HOLDS[kind]} (e.g. {example}), not "
                            f"{WANTED[field]}; {'a diffusion model goes' if kind == OTHER else 'give it'} "
                            f"as {label(KIND_FIELDS[kind])}")
    if kinds.get("base") == OTHER:
        needed = ([f"its text encoders with {FIX_CLIP}"] if not spec.clip else []) + (
            [f"its VAE with {FIX_VAE}"] if not spec.vae else [])
        if needed:
            problems.append(f"{label('base')} {spec.base}: a diffusion model only (no tensor under a "
                            f"checkpoint's model.diffusion_model., as BFL's flux1-dev.safetensors and ComfyUI's "
                            f"diffusion_models files), whose text encoders and VAE are files of their own: give "
                            f"{' and '.join(needed)}")
    return problems


def _clip_problems(spec: ModelSpec, label) -> list[str]:
    """The number of text-encoder files and their type given with them (the type's name is
    checked against ComfyUI's own list once it is imported: :mod:`.encoders`)."""
    if not spec.clip:
        return [f"{label('clip_type')} {spec.clip_type}: only with {label('clip')}, the text-encoder files "
                f"it names the type of"] if spec.clip_type else []
    if len(spec.clip) > len(CLIP_LOADERS):
        return [f"{label('clip')}: {len(spec.clip)} files; ComfyUI's loaders take 1 to {len(CLIP_LOADERS)} "
                f"text encoders (three: TripleCLIPLoader, SD3.5's clip_l, clip_g and t5xxl)"]
    if len(spec.clip) < 3 and not spec.clip_type:
        return [f"{label('clip_type')}: missing; ComfyUI's {CLIP_LOADERS[len(spec.clip)]} needs the type of "
                f"its file(s): flux (FLUX.1's t5xxl + clip_l), sd3 (SD3.5's), sdxl, stable_diffusion (SD1.x's "
                f"clip_l) …"]
    return []


def _model_problems(spec: ModelSpec, row: str, checked_folders: dict) -> tuple[list[str], int | None]:
    """Problems of one model's files, and its N0 (None when its training folder is unusable).
    ``row`` names the manifest row the model comes from ("" when given by flags);
    ``checked_folders`` (training folder → N0) keeps a folder's problems to the first row using it."""
    problems = []

    def label(field):
        return _label(row, field)

    if (spec.finetuned is None) == (not spec.loras):
        ft, lora = ("column finetuned", "column lora") if row else ("--finetuned", "--lora")
        problems.append(f"{row or '--finetuned / --lora'}: give exactly one of {ft} (a fine-tuned "
                        f"checkpoint) or {lora} (LoRAs), {'not both' if spec.loras else 'not neither'}")
    if len(spec.loras) > LORA_SLOTS:
        problems.append(f"{label('lora')}: {len(spec.loras)} LoRAs, at most {LORA_SLOTS} combine in one fine-tune")
    unreadable = [(path, p) for field, path in spec.files() if (p := model_file_problem(path, label(field)))]
    problems += [p for _, p in unreadable]
    problems += _kind_problems(spec, label, {path for path, _ in unreadable}) + _clip_problems(spec, label)
    if spec.train.resolve() in checked_folders:  # several models of one training set: decode it once
        return problems, checked_folders[spec.train.resolve()]
    try:
        n0 = len(spec.training_images())
    except UsageError as exc:
        problems += [f"{label('train')} {line}" for line in str(exc).splitlines()]
        n0 = None
    checked_folders[spec.train.resolve()] = n0
    return problems, n0


def _read_manifest(path: pathlib.Path, problems: list[str]) -> list[tuple[ModelSpec, str]]:
    """The manifest's models, each with the name of its row; what cannot be read goes to
    ``problems``. Relative paths are relative to the manifest."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            rows = [(reader.line_num, row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        problems.append(f"--manifest {path}: cannot be read as a CSV file ({exc}); "
                        f"give a CSV with the columns {', '.join(MANIFEST_COLUMNS)}")
        return []
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if not {"finetuned", "lora"} & set(columns):
        missing.append("finetuned or lora")
    if missing:
        problems.append(f"--manifest {path}: missing column(s) {', '.join(missing)}; its first line must "
                        f"name the columns {', '.join(MANIFEST_COLUMNS)}")
        return []
    if not rows:
        problems.append(f"--manifest {path}: no models listed below its header line")
    root, specs, seen = path.parent, [], {}
    for line, row in rows:
        name = (row.get("name") or "").strip()
        where = f"--manifest {path.name} line {line} ({name or 'no name'})"

        def label(field, where=where):
            return _label(where, field)

        if not name:
            problems.append(f"{label('name')}: empty; every model needs a name (its report folder)")
        elif name in seen:
            problems.append(f"{label('name')}: {name!r} is already the name of line {seen[name]}; "
                            f"names must be unique (each is a report folder)")
        seen.setdefault(name, line)
        loras = []
        for item in (x.strip() for x in (row.get("lora") or "").split(";")):
            if item:
                try:
                    file, strength = parse_lora(item)
                    loras.append((root / file, strength))
                except ValueError as exc:
                    problems.append(f"{label('lora')} {item}: {exc}")
        missing = [c for c in ("base", "train") if not (row.get(c) or "").strip()]
        if missing:
            problems.append(f"{label(missing[0])}: empty; give the {' and '.join(missing)} of every model")
            continue
        finetuned, vae = ((row.get(c) or "").strip() for c in ("finetuned", "vae"))
        clip = tuple(root / x.strip() for x in (row.get("clip") or "").split(";") if x.strip())
        specs.append((ModelSpec(name=name, base=root / row["base"].strip(), train=root / row["train"].strip(),
                                caption=row.get("caption") or "", finetuned=root / finetuned if finetuned else None,
                                loras=loras, clip=clip, clip_type=(row.get("clip_type") or "").strip() or None,
                                vae=root / vae if vae else None), where))
    return specs


def _single_model(args, problems: list[str]) -> list[tuple[ModelSpec, str]]:
    """The model given by flags (--base, --train, --finetuned/--lora)."""
    for flag in ("base", "train"):
        if getattr(args, flag) is None:
            problems.append(f"--{flag}: missing; give --manifest, or --base, --train and --finetuned or --lora")
    loras = []
    for text in args.lora:
        try:
            loras.append(parse_lora(text))
        except ValueError as exc:
            problems.append(f"--lora {text}: {exc}")
    if args.base is None or args.train is None:
        return []
    clip = tuple(pathlib.Path(x.strip()) for x in (args.clip or "").split(",") if x.strip())
    spec = ModelSpec(args.name, args.base, args.train, args.caption, args.finetuned, loras, clip=clip,
                     clip_type=args.clip_type, vae=args.vae)
    return [(spec, "")]


def _range_problems(args, n0s: dict[str, int]) -> list[str]:
    problems = []
    if args.n is not None:
        if args.n < 1:
            problems.append(f"--n {args.n}: the number of images to generate must be positive "
                            f"(default: 50 x the training images)")
        elif n0s and args.n < max(n0s.values()):
            name, n0 = max(n0s.items(), key=lambda kv: kv[1])
            problems.append(f"--n {args.n}: must be at least N0 = {n0} (the training images of {name}; "
                            f"clustering keeps N0 of the N images); the paper's default is 50·N0 = {50 * n0}")
    for option, (low, high, why) in RANGES.items():
        value = getattr(args, option)
        if not low <= value <= high:
            problems.append(f"--{option.replace('_', '-')} {value}: must be between {low} and {high} ({why})")
    if not (16 <= args.size <= 8192 and args.size % 8 == 0):
        problems.append(f"--size {args.size}: must be a multiple of 8 from 16 to 8192 (SD1.5: 512)")
    if not 0.0 < args.tau <= 1.0:
        problems.append(f"--tau {args.tau:g}: A-ESR's similarity threshold must be in (0, 1] "
                        f"(paper: 0.6 loose, 0.7 strict)")
    if not 0.0 <= args.max_aesr <= 1.0:
        problems.append(f"--max-aesr {args.max_aesr:g}: A-ESR is a fraction of the training images, "
                        f"so the limit must be in [0, 1] (0: fail on any recovered image)")
    return problems


def _ray_problems(args) -> list[str]:
    """``--ray`` and its options: Ray installed, no hand-run ``--shard``/``--merge`` beside it,
    counts positive."""
    if args.ray is None:
        return [f"--{flag}: only with --ray (a hand-run split is --shard i/n, then --merge)"
                for flag in ("shards", "workers") if getattr(args, flag) is not None]
    problems = []
    if importlib.util.find_spec("ray") is None:
        problems.append("--ray: Ray is not installed in this Python environment; install it with "
                        "pip install 'finextract[ray]' (or pip install 'ray>=2.10')")
    problems += [f"--ray with --{flag}: --ray runs every shard and the merge itself; leave --{flag} out"
                 for flag, given in (("shard", args.shard is not None), ("merge", args.merge)) if given]
    problems += [f"--{flag} {value}: must be at least 1" for flag in ("shards", "workers")
                 if (value := getattr(args, flag)) is not None and value < 1]
    return problems


def check(args) -> list[ModelSpec]:
    """The models to audit, once every input is sound, each with its N0 (the training images
    counted here, so that no later step decodes them again only to count them); raises
    :class:`AuditArgumentError` listing every problem. Turns ``args.shard`` into ``(i, n)``."""
    problems = []
    try:
        host.comfyui_path(args.comfyui)
    except host.HostError as exc:
        problems.append(f"--comfyui {args.comfyui}: {str(exc).split(': ', 1)[-1]}; give the folder "
                        f"of a ComfyUI checkout (the one holding main.py)")
    if args.shard is not None:
        try:
            args.shard = parse_shard(args.shard)
        except ValueError as exc:
            problems.append(f"--shard {args.shard}: {exc}")
            args.shard = None
        if args.merge:
            problems.append("--shard and --merge: separate steps; generate each shard with --shard, "
                            "then run once with --merge")
    problems += _ray_problems(args)
    if args.manifest is not None:
        given = [f"--{f.replace('_', '-')}" for f in ("base", "train", "finetuned", "clip", "clip_type", "vae")
                 if getattr(args, f) is not None]
        given += ["--lora"] if args.lora else []
        if given:
            problems.append(f"--manifest with {', '.join(given)}: give the models either in the manifest "
                            f"or by flags, not both")
        models = _read_manifest(args.manifest, problems)
    else:
        models = _single_model(args, problems)
    n0s, checked_folders, specs = {}, {}, []
    for spec, row in models:
        found, n0 = _model_problems(spec, row, checked_folders)
        problems += found
        if n0 is not None:
            n0s[spec.name] = n0
        specs.append(dataclasses.replace(spec, n0=n0))
        if args.merge and not any((args.out / spec.name / "shards").glob("shard-*.safetensors")):
            problems.append(f"--merge: no shard files in {args.out / spec.name / 'shards'}; run every "
                            f"--shard i/n step of {spec.name} with this --out first")
    problems += _range_problems(args, n0s)
    if (problem := writable_problem(args.out)) is not None:
        problems.append(problem)
    if problems:
        raise AuditArgumentError("\n".join(problems))
    return specs
