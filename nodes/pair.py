"""Loading a (base, fine-tune) pair into ComfyUI objects, with the checks guidance needs.

Guidance between two models that are in fact the same extracts nothing, silently; so does a pair
from two model families. This module refuses both with messages that name the files (as it does
damaged files and a LoRA whose tensors do not fit the base's weights), counts how
much of each LoRA applied, measures how far the fine-tune moved the UNet and the text encoder
(:mod:`..modelfiles.content`: from the files' tensors, so a re-saved base or a LoRA whose update is
zero is refused by what it holds, not passed by its name or hash), and attaches provenance to the
returned models.

Refusals are plain ``ValueError``s: ComfyUI reports an exception's type as ``module.qualname``
(``execution.full_type_name``), and a custom node pack's modules are named by their folder path,
so a class of our own would reach the UI and the API as ``…/custom_nodes/<pack>.nodes.pair.X``.
Builtins are reported by their bare name, and the message is the whole story.

Two layouts of a base or full fine-tune, as ComfyUI has two loaders for them: a checkpoint
(``checkpoints/``: diffusion model, text encoders and VAE in one file under ComfyUI's prefixes, as
Load Checkpoint reads it) or a diffusion model only (``diffusion_models/``, ComfyUI's legacy
``unet/`` too: BFL's ``flux1-dev.safetensors``, Comfy-Org's split files, diffusers-exported UNets,
as Load Diffusion Model reads them with ``comfy.sd.load_diffusion_model_state_dict``). The folder
decides, as it does for ComfyUI; the combo spells the second ``diffusion_models/<name>``
(:func:`model_choices`). A diffusion-model-only base brings no text encoder and no VAE: the pair
is then two MODELs, and the user's own DualCLIPLoader / CLIPLoader and VAELoader nodes encode the
prompts and decode the latents; the loader compares and reports the diffusion model only.

Provenance contract: every MODEL this loader returns carries
``model.model_options["finextract"] = {"role": "base" | "finetuned", "family": str,
"base": file_record, "finetune": {"kind": "checkpoint", **file_record} |
{"kind": "lora", "loras": [file_record + strength + tensors_applied/tensors_total]}}``
(file records: file as picked, folder (``checkpoints`` or ``diffusion_models``), bytes, sha256,
content_sha256; see :mod:`..modelfiles.provenance`; ``"kind": "checkpoint"`` is a full fine-tune
in either layout), and ``"change": {"UNet": r, "text encoder": r}`` on the checkpoint and on each
LoRA record: the relative norm ‖ΔW‖/‖W_base‖ of the component (0.0 unchanged; None for a LoRA
update in a form not measured, such as LoHa or DoRA; no "text encoder" entry where the loader has
none to measure: a diffusion-model-only file in the pair). A LoRA record adds
``text_encoder_tensors_not_applied`` when the base has no text encoder here. ComfyUI copies
model_options on clone, so the record follows the model through patch nodes.

Two steps, so that a batch keeps its base loaded: :func:`load_base` reads, checks, hashes and
builds the base (:class:`Base`); :func:`load_pair` puts the fine-tune on top of it (LoRAs as
patches on clones, which leave the base's own objects untouched, or a full fine-tune). The node
loads its base every run, as ComfyUI's own loaders do; a batch audit of many LoRAs of one base
(``finextract audit`` with a manifest, each ``--ray`` worker) holds a :class:`ResidentBase`,
which reads, hashes and builds that base once per process.
"""
from __future__ import annotations

import dataclasses
import functools

import comfy.lora
import comfy.lora_convert
import comfy.model_detection
import comfy.sd
import comfy.utils
import comfy.weight_adapter
import folder_paths

from ..modelfiles import (COMPONENTS, LORA_KEY_ENDINGS, MIN_APPLIED_FRACTION, TEXT_ENCODER, UNET, applied_tensors,
                          as_matrix, compare_files, component_norms, describe, file_identity, file_record, lora_delta,
                          lora_family, low_rank_change, model_file_problem, read_header, squared_norm,
                          text_encoder_tensors, with_diffusers_aliases)

FAMILIES = {"SD15": "SD1.x", "SD20": "SD2.x", "SDXL": "SDXL", "SD3": "SD3", "Flux": "FLUX", "MiniPixel": "miniature"}
"""The model families this pack handles: ComfyUI's name of each (its ``supported_models`` class,
as ``model_detection`` returns it) → the name people and :func:`..modelfiles.lora_family` use. SDXL
includes its descendants (Pony, Illustrious, NoobAI: ComfyUI detects them as SDXL, ε or
v-prediction); Flux is FLUX.1-dev (guidance-distilled; schnell is ``FluxSchnell``); SD3 covers
SD3.5. What was verified for each, and how: the README's family table. A base of another family
is refused: guidance on it has not been checked."""


TEXT_ENCODER_PREFIXES = {"SDXL": ["conditioner.embedders."]}
"""Where a checkpoint of the family keeps its text encoders, where ComfyUI's config does not say:
its ``SDXL`` class inherits ``text_encoder_key_prefix = ["cond_stage_model."]`` but reads (its own
``process_clip_state_dict``) and saves CLIP-L and CLIP-G under ``conditioner.embedders.``. Without
this a LoRA's text-encoder change is unmeasured and a full fine-tune's is missed (the pair would
run the base's CLIP)."""


def _handled() -> str:
    return ", ".join(v for v in FAMILIES.values() if v != "miniature")


DIFFUSION_MODELS = "diffusion_models"
"""ComfyUI's folder of diffusion-model-only files (``models/diffusion_models`` and ``models/unet``)."""
DIFFUSION_MODEL_LABEL = DIFFUSION_MODELS + "/"

SPLIT_NOTE = ("diffusion model only: this loader's clip, base_clip and vae outputs are empty; encode "
              "both prompts with your own text-encoder loader (DualCLIPLoader for FLUX.1, "
              "TripleCLIPLoader for SD3.5, CLIPLoader or DualCLIPLoader for SD1.x / SDXL) and decode "
              "with your own VAELoader")


def model_choices() -> list[str]:
    """What a base or a full fine-tune is picked from: the checkpoints folder's files as ComfyUI
    lists them (the names saved workflows hold), then the diffusion_models folder's, each spelled
    ``diffusion_models/<name>`` (one list, so a FLUX.1 user sees ``flux1-dev.safetensors`` where
    they pick the base; the spelling keeps a file of one name in both folders apart)."""
    return folder_paths.get_filename_list("checkpoints") + [
        DIFFUSION_MODEL_LABEL + n for n in folder_paths.get_filename_list(DIFFUSION_MODELS)]


def model_folder(picked: str) -> tuple[str, str]:
    """(ComfyUI folder, file name in it) of a name from :func:`model_choices`: the checkpoints
    folder's file when it has one of that name (a checkpoints subfolder called diffusion_models
    included), else, for a ``diffusion_models/`` name, the diffusion model."""
    if picked.startswith(DIFFUSION_MODEL_LABEL) and folder_paths.get_full_path("checkpoints", picked) is None:
        return DIFFUSION_MODELS, picked[len(DIFFUSION_MODEL_LABEL):]
    return "checkpoints", picked


@dataclasses.dataclass
class Pair:
    """The loaded pair. ``clip``, ``base_clip`` and ``vae`` are None when the base is a diffusion
    model only: the user's own CLIP and VAE loaders provide them."""
    base: object
    finetuned: object
    clip: object | None
    base_clip: object | None
    vae: object | None
    report: str


@dataclasses.dataclass
class _Model:
    """A picked base or full fine-tune: its file, family and component prefixes; a checkpoint's
    tensors until its models are built, or the model ComfyUI built from a diffusion-model-only file
    (its family is known only then: ComfyUI detects diffusers layouts by converting them)."""
    picked: str
    what: str
    folder: str
    path: str
    family: str
    prefixes: dict
    sd: dict | None = None
    metadata: object = None
    model: object = None

    @property
    def alone(self) -> bool:
        """A diffusion model only: no text encoder, no VAE."""
        return self.folder == DIFFUSION_MODELS

    def record(self) -> dict:
        return file_record(self.path, self.picked, folder=self.folder)


def _read(folder: str, name: str, what: str, picked: str | None = None):
    path = folder_paths.get_full_path(folder, name)
    if path is None:
        raise ValueError(f"{what} {picked or name!r} is not in ComfyUI's {folder!r} folder")
    problem = model_file_problem(path, what)
    if problem is not None:
        raise ValueError(problem)
    try:
        sd, metadata = comfy.utils.load_torch_file(path, safe_load=True, return_metadata=True)
    except Exception as exc:  # safetensors / torch raise many types for damaged files
        raise ValueError(f"{what} {picked or name!r} cannot be read (corrupt, truncated or not a model "
                         f"file): {str(exc).splitlines()[0]}") from exc
    return path, sd, metadata


def _handled_family(family: str, name: str, what: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"{what} {name!r} is a {family} model (ComfyUI's name for its family), a "
                         f"family this pack does not handle: its guidance has not been verified. "
                         f"Handled: {_handled()}.")


def _family(sd: dict, name: str, what: str) -> tuple[str, dict]:
    """The model family's name and the key prefixes of its components in a checkpoint file."""
    prefix = comfy.model_detection.unet_prefix_from_state_dict(sd)
    config = comfy.model_detection.model_config_from_unet(sd, prefix)
    if config is None:
        if comfy.model_detection.model_config_from_unet(sd, "") is not None:
            raise ValueError(
                f"{what} {name!r} holds a diffusion model only (its keys lack a checkpoint's "
                f"'model.diffusion_model.' prefix, as in BFL's and Comfy-Org's diffusion-model "
                f"files): put it in ComfyUI/models/diffusion_models and pick it as "
                f"'{DIFFUSION_MODEL_LABEL}<name>'; its text encoders and VAE then come from your own "
                f"CLIP and VAE loader nodes")
        raise ValueError(f"{what} {name!r}: ComfyUI recognises no diffusion model in it")
    family = type(config).__name__
    _handled_family(family, name, what)
    return family, {UNET: [prefix], TEXT_ENCODER: TEXT_ENCODER_PREFIXES.get(family, list(config.text_encoder_key_prefix))}


def _unet_prefix(sd: dict) -> str:
    """Where the diffusion model starts in a file read as a diffusion model only: a checkpoint's
    prefix if the file has it (ComfyUI's ``load_diffusion_model_state_dict`` then strips it and
    loads the diffusion model alone), else none (BFL's, Comfy-Org's and diffusers' files)."""
    prefix = comfy.model_detection.unet_prefix_from_state_dict(sd)
    return prefix if any(k.startswith(prefix) for k in sd) else ""


def _not_a_diffusion_model(sd: dict) -> str:
    """What a file ComfyUI finds no diffusion model in may be instead."""
    lora = next((k for k in sorted(sd) if k.endswith(LORA_KEY_ENDINGS)), None)
    if lora is not None:
        return (f"It holds LoRA tensors (e.g. {lora}): put it in ComfyUI/models/loras and pick it in a "
                f"lora slot.")
    return ("A text encoder or a VAE file is loaded by ComfyUI's CLIPLoader / DualCLIPLoader / "
            "VAELoader, whose outputs go to the prompts and the clustering, not here.")


def _open(picked: str, role: str) -> _Model:
    """Read a picked base or fine-tune: a checkpoint's family from ComfyUI's detection; a diffusion
    model only built at once by ComfyUI's ``load_diffusion_model_state_dict`` (what its Load
    Diffusion Model node runs), which also says its family."""
    folder, name = model_folder(picked)
    if folder == "checkpoints":
        what = f"{role} checkpoint"
        path, sd, metadata = _read(folder, name, what)
        family, prefixes = _family(sd, picked, what)
        return _Model(picked, what, folder, path, family, prefixes, sd=sd, metadata=metadata)
    what = f"{role} diffusion model"
    path, sd, metadata = _read(folder, name, what, picked)
    prefix = _unet_prefix(sd)
    model = comfy.sd.load_diffusion_model_state_dict(sd, metadata=metadata)
    if model is None:
        raise ValueError(f"{what} {picked!r}: ComfyUI recognises no diffusion model in it (neither in "
                         f"ComfyUI's / the original key names nor in diffusers'). {_not_a_diffusion_model(sd)}")
    family = type(model.model.model_config).__name__
    _handled_family(family, picked, what)
    return _Model(picked, what, folder, path, family, {UNET: [prefix], TEXT_ENCODER: []}, model=model)


def _load(sd: dict, metadata, name: str, vae: bool = True, clip: bool = True):
    model, clip, vae, _ = comfy.sd.load_state_dict_guess_config(
        sd, output_vae=vae, output_clip=clip,
        embedding_directory=folder_paths.get_folder_paths("embeddings"), metadata=metadata)
    if model is None:
        raise ValueError(f"checkpoint {name!r} holds no diffusion model")
    return model, clip, vae


def _build(m: _Model, clip: bool = True, vae: bool = True):
    """(model, clip, vae) of a picked file, dropping a checkpoint's tensors once built."""
    if m.alone:
        return m.model, None, None
    built = _load(m.sd, m.metadata, m.picked, vae=vae, clip=clip)
    m.sd = None
    return built


def _weight_key(target) -> str:
    """The weight a patch target names: ComfyUI keys a patch on a run of a fused weight's rows (a
    diffusers FLUX/SD3 ``to_q`` of ``qkv``) as ``(key, (dim, start, count))``."""
    return target[0] if isinstance(target, tuple) else target


def _lora_change(patches: dict, reached: set, strength: float) -> tuple[dict, set]:
    """Squared norm of ``strength · ΔW`` per component over the layers the LoRA reached, and the
    components with an update this pack does not measure (LoHa, LoKr, OFT, DoRA, "set")."""
    delta, unmeasured = dict.fromkeys(COMPONENTS, 0.0), set()
    for target in sorted(reached, key=str):  # a fixed order: the float sum is then the same in every process
        component = UNET if _weight_key(target).startswith("diffusion_model.") else TEXT_ENCODER
        patch = patches[target]
        if isinstance(patch, comfy.weight_adapter.LoRAAdapter) and patch.weights[4] is None:
            up, down, alpha, mid = patch.weights[:4]
            change = lora_delta(up, down, alpha, mid)
        elif isinstance(patch, tuple) and patch[0] == "diff":
            change = patch[1][0]
        else:
            unmeasured.add(component)
            continue
        delta[component] += strength ** 2 * squared_norm(change)
    return delta, unmeasured


def _check_shapes(patches: dict, lora: dict, model, clip, base: str, name: str) -> None:
    """Refuse a LoRA whose low-rank change does not fit the weight it targets (same family, other
    size: e.g. a LoRA of a wider variant). ComfyUI would only log the failed merge; the sampler's
    LoRA branch would fail mid-run with ``size of tensor a (…) must match``. So the first misfit
    is named, with both shapes, before anything is applied."""
    names = {id(tensor): key for key, tensor in lora.items()}  # adapters hold the file's own tensors
    for target, adapter in patches.items():
        if isinstance(target, tuple) or not isinstance(adapter, comfy.weight_adapter.LoRAAdapter):
            continue  # a slice of a fused weight, or LoHa/LoKr/OFT: not a plain up @ down to check here
        up, down, _alpha, mid, _dora_scale, reshape = adapter.weights
        owner = model.model if target.startswith("diffusion_model.") or clip is None else clip.cond_stage_model
        try:
            weight_shape = tuple(comfy.utils.get_attr(owner, target).shape)
        except AttributeError:
            continue  # reaches no weight: counted by the applied-tensors check
        expected = tuple(reshape) if reshape is not None else weight_shape
        change = low_rank_change(tuple(up.shape), tuple(down.shape), None if mid is None else tuple(mid.shape))
        if change != as_matrix(expected):
            tensors = ", ".join(f"{names.get(id(t), '?')} {tuple(t.shape)}" for t in (up, mid, down) if t is not None)
            made = f"a change of shape {change}" if change else "no change (their ranks differ)"
            raise ValueError(
                f"LoRA {name!r} does not fit {base}: its tensors {tensors} make "
                f"{made}, but the model's weight {target} has shape {weight_shape}. The LoRA was made "
                f"for a model of another size (another base or variant of this family) or is damaged; "
                f"use the LoRA trained on this base.")


def _lora_family_hint(keys, base_family: str) -> str:
    """Why a LoRA may not fit: the family its key spelling names, if it is another one."""
    family, example = lora_family(keys)
    if family is None or family == FAMILIES[base_family]:
        return ("It was probably made for another model family, or uses a key spelling ComfyUI "
                "does not know.")
    if family not in FAMILIES.values():
        return (f"Its keys are spelled as for a {family} LoRA (e.g. {example}), a family this pack "
                f"does not handle (handled: {_handled()}).")
    return f"Its keys are spelled as for a {family} LoRA (e.g. {example}): load it with a {family} base."


def _apply_lora(model, clip, base: _Model, base_norms: dict, name: str, strength: float):
    """ComfyUI's load_lora_for_models, counting what applied instead of only logging it. Without a
    text encoder here (a diffusion-model-only base: the CLIP is the user's own loader's), the
    LoRA's text-encoder tensors are set aside, counted and reported, and the rest must fit."""
    path, lora, _ = _read("loras", name, "LoRA")
    keys = list(lora)
    label, family = f"{base.what} {base.picked!r}", base.family
    key_map = comfy.lora.model_lora_keys_unet(model.model, {})
    if clip is not None:
        key_map = comfy.lora.model_lora_keys_clip(clip.cond_stage_model, key_map)
    key_map = with_diffusers_aliases(key_map)
    lora = comfy.lora_convert.convert_lora(lora)
    patches = comfy.lora.load_lora(lora, key_map, log_missing=False)
    _check_shapes(patches, lora, model, clip, label, name)
    model = model.clone()
    reached = set(model.add_patches(patches, strength))
    if clip is not None:
        clip = clip.clone()
        reached |= set(clip.add_patches(patches, strength))
    modules = {n for n, target in key_map.items() if target in reached}
    applied = applied_tensors(lora.keys(), modules)
    total = len(lora)
    set_aside = [] if clip is not None else text_encoder_tensors(lora)
    if set_aside and len(set_aside) == total:
        raise ValueError(
            f"LoRA {name!r} changes text encoders only ({total} tensors, e.g. {set_aside[0]}), and "
            f"{label} is a diffusion model only: this loader has no text encoder to apply it to, "
            f"so the pair would be two identical diffusion models. Apply it to your CLIP with "
            f"ComfyUI's LoraLoader (strength_model 0) instead.")
    considered = total - len(set_aside)
    if total == 0 or len(applied) < MIN_APPLIED_FRACTION * considered:
        missing = sorted(set(lora) - set(applied) - set(set_aside))[:3]
        raise ValueError(
            f"LoRA {name!r} does not fit {label} ({FAMILIES[family]}): "
            f"{len(applied)} of {considered} {'diffusion-model ' if set_aside else ''}tensors reached a "
            f"layer (at least {MIN_APPLIED_FRACTION:.0%} required), e.g. unmatched {missing}. "
            f"{_lora_family_hint(keys, family)}")
    delta, unmeasured = _lora_change(patches, reached, strength)
    if not unmeasured and not any(delta.values()):
        why = ("strength 0 turns it off (pick 'none' to leave a slot empty)" if strength == 0 else
               "every layer's update (alpha/rank · up · down) is zero, e.g. all its up weights are "
               "0: an untrained or broken LoRA")
        raise ValueError(
            f"LoRA {name!r} at strength {strength:g} changes no weight of {label}: {why}. Guidance "
            f"between the base and it extracts nothing.")
    measured = COMPONENTS if clip is not None else (UNET,)
    change = {c: None if c in unmeasured or (delta[c] and not base_norms[c]) else
              (delta[c] / base_norms[c]) ** 0.5 if delta[c] else 0.0 for c in measured}
    te_layers = sum(1 for key in reached if not _weight_key(key).startswith("diffusion_model."))
    extra = {"text_encoder_tensors_not_applied": len(set_aside)} if set_aside else {}
    record = file_record(path, name, strength=strength, tensors_applied=len(applied),
                         tensors_total=total, unet_layers=len(reached) - te_layers,
                         text_encoder_layers=te_layers, change=change, **extra)
    return model, clip, record


def _lora_line(name: str, strength: float, record: dict) -> str:
    line = (f"LoRA {name} x{strength:g}: {record['tensors_applied']}/{record['tensors_total']} tensors "
            f"applied ({record['unet_layers']} UNet layers, {record['text_encoder_layers']} text-encoder "
            f"layers); {describe(record['change'])}")
    set_aside = record.get("text_encoder_tensors_not_applied")
    if set_aside:
        line += (f"; its {set_aside} text-encoder tensors are NOT applied: the base is a diffusion "
                 f"model only, so the CLIP is your own loader's, not this loader's. ComfyUI applies "
                 f"them with a LoraLoader on that CLIP (this LoRA, strength_model 0, strength_clip "
                 f"{strength:g}); encode the caption with its CLIP and the empty prompt with yours, as "
                 f"the fine-tune was trained. Without it the caption goes through the base text "
                 f"encoder")
    return line


def _no_shared_tensor(base: _Model, ft: _Model) -> ValueError:
    """The refusal for a fine-tune none of whose diffusion-model tensors matches the base's by name
    and shape, with an example name from each file."""
    def example(m: _Model) -> str:
        prefix = m.prefixes[UNET][0]
        return next((k[len(prefix):] for k in sorted(read_header(m.path)) if k.startswith(prefix)
                     and not k.startswith("__")), "?")
    return ValueError(
        f"{ft.what} {ft.picked!r} shares no diffusion-model tensor (same name and shape) with "
        f"{base.what} {base.picked!r} (e.g. base {example(base)!r}, fine-tune {example(ft)!r}): the "
        f"two files spell the model's weights differently (diffusers' names against ComfyUI's / "
        f"the original ones) or hold models of different sizes. ComfyUI loads either spelling, but "
        f"this loader measures the fine-tune weight by weight against its base: use the fine-tune "
        f"saved in the base's layout (or the base in the fine-tune's)")


@dataclasses.dataclass(eq=False)
class Base:
    """A base, loaded and checked: the opened file (family, prefixes; its tensors dropped once
    built), its file record and its ComfyUI objects (``clip`` and ``vae`` None for a diffusion
    model only). Fine-tunes are put on clones of ``model`` and ``clip``; nothing here is changed
    by them."""
    opened: _Model
    file: tuple
    """Its :func:`..modelfiles.file_identity` when it was read: a file changed since is another base."""
    record: dict
    model: object
    clip: object | None
    vae: object | None

    @functools.cached_property
    def norms(self) -> dict:
        """Squared norm of each component (a LoRA's ‖ΔW‖/‖W‖ denominators): one pass over the
        file, made when the first LoRA needs it."""
        return component_norms(self.opened.path, self.opened.prefixes)


def load_base(picked: str) -> Base:
    """Read, check (readable, a handled family), hash and build the base ``picked`` (a name from
    :func:`model_choices`)."""
    opened = _open(picked, "base")
    record = opened.record()
    model, clip, vae = _build(opened)
    return Base(opened, file_identity(opened.path), record, model, clip, vae)


class ResidentBase:
    """The base a process keeps loaded across fine-tunes: :meth:`get` returns the held one when it
    is the same file (same real path, size and mtime), else drops it and loads the new one (one
    base in memory at a time). ``loads`` counts the bases it loaded."""

    def __init__(self):
        self.base: Base | None = None
        self.loads = 0

    def get(self, picked: str) -> Base:
        path = folder_paths.get_full_path(*model_folder(picked))
        if self.base is not None and path is not None and file_identity(path) == self.base.file:
            return self.base
        self.base = None
        self.base = load_base(picked)
        self.loads += 1
        return self.base


def load_pair(base_name: str, finetuned_name: str | None, loras: list[tuple[str, float]],
              resident: ResidentBase | None = None) -> Pair:
    """Load the base (kept in ``resident`` when given) and its fine-tune: a full fine-tune
    (checkpoint or diffusion model only, in either folder, see :func:`model_choices`) or LoRAs
    applied to the base."""
    if (finetuned_name is None) == (not loras):
        raise ValueError("pick the fine-tune as either a checkpoint or one or more LoRAs (not both, "
                         "not neither)")
    loaded = resident.get(base_name) if resident is not None else load_base(base_name)
    base, base_rec = loaded.opened, loaded.record
    family = base.family
    lines = [f"base: {base_name} ({family}, sha256 {base_rec['sha256'][:12]})"
             + (f"; {SPLIT_NOTE}" if base.alone else "")]
    if finetuned_name is not None:
        ft = _open(finetuned_name, "fine-tuned")
        if ft.family != family:
            raise ValueError(f"{base.what} {base_name!r} is {family} but {ft.what} {finetuned_name!r} "
                             f"is {ft.family}: a pair must share one model family")
        finetune = {"kind": "checkpoint", **ft.record()}
        if finetune["sha256"] == base_rec["sha256"]:
            raise ValueError(f"{ft.what} {finetuned_name!r} is the same file as base "
                             f"{base_name!r}: guidance between identical models extracts nothing")
        if finetune["content_sha256"] == base_rec["content_sha256"]:
            raise ValueError(f"{ft.what} {finetuned_name!r} holds the same tensors as base "
                             f"{base_name!r} (only its metadata or file format differs): guidance "
                             f"between identical models extracts nothing")
        # with a diffusion-model-only file on either side, the diffusion models are what compare
        alone = base.alone or ft.alone
        compared = (UNET,) if alone else COMPONENTS
        change = compare_files(base.path, ft.path, {c: base.prefixes[c] for c in compared},
                               {c: ft.prefixes[c] for c in compared})
        if not change.compared:
            raise _no_shared_tensor(base, ft)
        if change.unchanged:
            what = "diffusion-model" if alone else "UNet and text-encoder"
            raise ValueError(f"{ft.what} {finetuned_name!r} does not change base "
                             f"{base_name!r}: the {change.compared} {what} tensors "
                             f"both files hold are identical (the files differ elsewhere: VAE, "
                             f"tensors only one of them has, or metadata). Guidance between "
                             f"identical models extracts nothing")
        finetune["change"] = {c: r for c, r in change.relative().items() if c in compared}
        # Only what the fine-tune changes is built (its VAE is unused; a text encoder it left as
        # the base's is the base's CLIP), and its state dict is dropped once its model is: the
        # peak holds one file's tensors beside the two models (with SDXL's 818 M-parameter text
        # encoders kept, one fp16 state dict and one CLIP less).
        unused_te = base.alone and not ft.alone and any(
            k.startswith(tuple(ft.prefixes[TEXT_ENCODER])) for k in ft.sd)
        finetuned, clip, _ = _build(ft, vae=False, clip=not alone and bool(finetune["change"][TEXT_ENCODER]))
    base_model, base_clip, vae = loaded.model, loaded.clip, loaded.vae
    if finetuned_name is not None:
        if clip is None or base_clip is None:
            clip = base_clip
        lines.append(f"fine-tune: full {'diffusion model' if ft.alone else 'checkpoint'} {finetuned_name} "
                     f"({family}, sha256 {finetune['sha256'][:12]}); {describe(finetune['change'])}"
                     + ("; text encoder: the base's (the fine-tune is a diffusion model only)"
                        if ft.alone and not base.alone else "")
                     + ("; its text encoder is not loaded: the base is a diffusion model only, so the "
                        "prompts go through your own CLIP loader" if unused_te else ""))
    else:
        finetuned, clip, records = base_model, base_clip, []
        for name, strength in loras:
            finetuned, clip, record = _apply_lora(finetuned, clip, base, loaded.norms, name, strength)
            records.append(record)
            lines.append(_lora_line(name, strength, record))
        finetune = {"kind": "lora", "loras": records}
    provenance = {"family": family, "base": base_rec, "finetune": finetune}
    base_model = base_model.clone()
    finetuned = finetuned.clone()
    base_model.model_options["finextract"] = {"role": "base", **provenance}
    finetuned.model_options["finextract"] = {"role": "finetuned", **provenance}
    return Pair(base_model, finetuned, clip, base_clip, vae, "\n".join(lines))
