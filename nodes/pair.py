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

Provenance contract: every MODEL this loader returns carries
``model.model_options["finextract"] = {"role": "base" | "finetuned", "family": str,
"base": file_record, "finetune": {"kind": "checkpoint", **file_record} |
{"kind": "lora", "loras": [file_record + strength + tensors_applied/tensors_total]}}``
(file records: file, bytes, sha256, content_sha256; see :mod:`..modelfiles.provenance`), and
``"change": {"UNet": r, "text encoder": r}`` on the checkpoint and on each LoRA record: the
relative norm ‖ΔW‖/‖W_base‖ of the component (0.0 unchanged; None for a LoRA update in a form not
measured, such as LoHa or DoRA). ComfyUI copies model_options on clone, so the record follows the
model through patch nodes.

Two steps, so that a batch keeps its base loaded: :func:`load_base` reads, checks, hashes and
builds the base checkpoint (:class:`Base`); :func:`load_pair` puts the fine-tune on top of it
(LoRAs as patches on clones, which leave the base's own objects untouched, or a full checkpoint).
The node loads its base every run, as ComfyUI's own loaders do; a batch audit of many LoRAs of
one base (``finextract audit`` with a manifest, each ``--ray`` worker) holds a
:class:`ResidentBase`, which reads, hashes and builds that base once per process.
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

from ..modelfiles import (COMPONENTS, MIN_APPLIED_FRACTION, TEXT_ENCODER, UNET, applied_tensors, as_matrix,
                          compare_files, component_norms, describe, file_identity, file_record, lora_delta, lora_family,
                          low_rank_change, model_file_problem, squared_norm, with_diffusers_aliases)

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


@dataclasses.dataclass
class Pair:
    base: object
    finetuned: object
    clip: object
    base_clip: object
    vae: object
    report: str


def _read(folder: str, name: str, what: str):
    path = folder_paths.get_full_path(folder, name)
    if path is None:
        raise ValueError(f"{what} {name!r} is not in ComfyUI's {folder!r} folder")
    problem = model_file_problem(path, what)
    if problem is not None:
        raise ValueError(problem)
    try:
        sd, metadata = comfy.utils.load_torch_file(path, safe_load=True, return_metadata=True)
    except Exception as exc:  # safetensors / torch raise many types for damaged files
        raise ValueError(f"{what} {name!r} cannot be read (corrupt, truncated or not a model "
                         f"file): {str(exc).splitlines()[0]}") from exc
    return path, sd, metadata


def _family(sd: dict, name: str, what: str) -> tuple[str, dict]:
    """The model family's name and the key prefixes of its components in a checkpoint file."""
    prefix = comfy.model_detection.unet_prefix_from_state_dict(sd)
    config = comfy.model_detection.model_config_from_unet(sd, prefix)
    if config is None:
        raise ValueError(f"{what} {name!r}: ComfyUI recognises no diffusion model in it")
    family = type(config).__name__
    if family not in FAMILIES:
        raise ValueError(f"{what} {name!r} is a {family} model (ComfyUI's name for its family), a "
                         f"family this pack does not handle: its guidance has not been verified. "
                         f"Handled: {_handled()}.")
    return family, {UNET: [prefix], TEXT_ENCODER: TEXT_ENCODER_PREFIXES.get(family, list(config.text_encoder_key_prefix))}


def _load(sd: dict, metadata, name: str, vae: bool = True, clip: bool = True):
    model, clip, vae, _ = comfy.sd.load_state_dict_guess_config(
        sd, output_vae=vae, output_clip=clip,
        embedding_directory=folder_paths.get_folder_paths("embeddings"), metadata=metadata)
    if model is None:
        raise ValueError(f"checkpoint {name!r} holds no diffusion model")
    return model, clip, vae


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


def _check_shapes(patches: dict, lora: dict, model, clip, base_name: str, name: str) -> None:
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
                f"LoRA {name!r} does not fit base checkpoint {base_name!r}: its tensors {tensors} make "
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


def _apply_lora(model, clip, base_name: str, family: str, base_norms: dict, name: str, strength: float):
    """ComfyUI's load_lora_for_models, counting what applied instead of only logging it."""
    path, lora, _ = _read("loras", name, "LoRA")
    keys = list(lora)
    key_map = comfy.lora.model_lora_keys_unet(model.model, {})
    if clip is not None:
        key_map = comfy.lora.model_lora_keys_clip(clip.cond_stage_model, key_map)
    key_map = with_diffusers_aliases(key_map)
    lora = comfy.lora_convert.convert_lora(lora)
    patches = comfy.lora.load_lora(lora, key_map, log_missing=False)
    _check_shapes(patches, lora, model, clip, base_name, name)
    model = model.clone()
    reached = set(model.add_patches(patches, strength))
    if clip is not None:
        clip = clip.clone()
        reached |= set(clip.add_patches(patches, strength))
    modules = {n for n, target in key_map.items() if target in reached}
    applied = applied_tensors(lora.keys(), modules)
    total = len(lora)
    if total == 0 or len(applied) < MIN_APPLIED_FRACTION * total:
        missing = sorted(set(lora) - set(applied))[:3]
        raise ValueError(
            f"LoRA {name!r} does not fit base checkpoint {base_name!r} ({FAMILIES[family]}): "
            f"{len(applied)} of {total} tensors reached a layer (at least {MIN_APPLIED_FRACTION:.0%} "
            f"required), e.g. unmatched {missing}. {_lora_family_hint(keys, family)}")
    delta, unmeasured = _lora_change(patches, reached, strength)
    if not unmeasured and not any(delta.values()):
        why = ("strength 0 turns it off (pick 'none' to leave a slot empty)" if strength == 0 else
               "every layer's update (alpha/rank · up · down) is zero, e.g. all its up weights are "
               "0: an untrained or broken LoRA")
        raise ValueError(
            f"LoRA {name!r} at strength {strength:g} changes no weight of base checkpoint "
            f"{base_name!r}: {why}. Guidance between the base and it extracts nothing.")
    change = {c: None if c in unmeasured or (delta[c] and not base_norms[c]) else
              (delta[c] / base_norms[c]) ** 0.5 if delta[c] else 0.0 for c in COMPONENTS}
    te_layers = sum(1 for key in reached if not _weight_key(key).startswith("diffusion_model."))
    record = file_record(path, name, strength=strength, tensors_applied=len(applied),
                         tensors_total=total, unet_layers=len(reached) - te_layers,
                         text_encoder_layers=te_layers, change=change)
    return model, clip, record


@dataclasses.dataclass(eq=False)
class Base:
    """A base checkpoint, loaded and checked: its ComfyUI objects and what every fine-tune of it
    needs (family, component prefixes, file record). Fine-tunes are put on clones of ``model``
    and ``clip``; nothing here is changed by them."""
    path: str
    file: tuple
    """Its :func:`..modelfiles.file_identity` when it was read: a file changed since is another base."""
    family: str
    prefixes: dict
    record: dict
    model: object
    clip: object
    vae: object

    @functools.cached_property
    def norms(self) -> dict:
        """Squared norm of each component (a LoRA's ‖ΔW‖/‖W‖ denominators): one pass over the
        file, made when the first LoRA needs it."""
        return component_norms(self.path, self.prefixes)


def load_base(name: str) -> Base:
    """Read, check (readable, a handled family), hash and build the base checkpoint ``name``."""
    path, sd, metadata = _read("checkpoints", name, "base checkpoint")
    family, prefixes = _family(sd, name, "base checkpoint")
    record = file_record(path, name)
    model, clip, vae = _load(sd, metadata, name)
    return Base(path, file_identity(path), family, prefixes, record, model, clip, vae)


class ResidentBase:
    """The base checkpoint a process keeps loaded across fine-tunes: :meth:`get` returns the held
    one when it is the same file (same real path, size and mtime), else drops it and loads the new
    one (one base in memory at a time). ``loads`` counts the bases it loaded."""

    def __init__(self):
        self.base: Base | None = None
        self.loads = 0

    def get(self, name: str) -> Base:
        path = folder_paths.get_full_path("checkpoints", name)
        if self.base is not None and path is not None and file_identity(path) == self.base.file:
            return self.base
        self.base = None
        self.base = load_base(name)
        self.loads += 1
        return self.base


def load_pair(base_name: str, finetuned_name: str | None, loras: list[tuple[str, float]],
              resident: ResidentBase | None = None) -> Pair:
    """Load the base checkpoint (kept in ``resident`` when given) and its fine-tune: a full
    checkpoint or LoRAs applied to the base."""
    if (finetuned_name is None) == (not loras):
        raise ValueError("pick the fine-tune as either a checkpoint or one or more LoRAs (not both, "
                         "not neither)")
    base = resident.get(base_name) if resident is not None else load_base(base_name)
    family, base_rec = base.family, base.record
    lines = [f"base: {base_name} ({family}, sha256 {base_rec['sha256'][:12]})"]
    if finetuned_name is not None:
        ft_path, ft_sd, ft_meta = _read("checkpoints", finetuned_name, "fine-tuned checkpoint")
        ft_family, _ = _family(ft_sd, finetuned_name, "fine-tuned checkpoint")
        if ft_family != family:
            raise ValueError(f"base checkpoint {base_name!r} is {family} but fine-tuned checkpoint "
                             f"{finetuned_name!r} is {ft_family}: a pair must share one model family")
        finetune = {"kind": "checkpoint", **file_record(ft_path, finetuned_name)}
        if finetune["sha256"] == base_rec["sha256"]:
            raise ValueError(f"fine-tuned checkpoint {finetuned_name!r} is the same file as base "
                             f"{base_name!r}: guidance between identical models extracts nothing")
        if finetune["content_sha256"] == base_rec["content_sha256"]:
            raise ValueError(f"fine-tuned checkpoint {finetuned_name!r} holds the same tensors as base "
                             f"{base_name!r} (only its metadata or file format differs): guidance "
                             f"between identical models extracts nothing")
        change = compare_files(base.path, ft_path, base.prefixes)
        if change.unchanged:
            raise ValueError(f"fine-tuned checkpoint {finetuned_name!r} does not change base "
                             f"{base_name!r}: the {change.compared} UNet and text-encoder tensors "
                             f"both files hold are identical (the files differ elsewhere: VAE, "
                             f"tensors only one of them has, or metadata). Guidance between "
                             f"identical models extracts nothing")
        finetune["change"] = change.relative()
        # Only what the fine-tune changes is built (its VAE is unused; a text encoder it left as
        # the base's is the base's CLIP), and its state dict is dropped once its model is: the
        # peak holds one file's tensors beside the two models (with SDXL's 818 M-parameter text
        # encoders kept, one fp16 state dict and one CLIP less).
        finetuned, clip, _ = _load(ft_sd, ft_meta, finetuned_name, vae=False,
                                   clip=bool(finetune["change"][TEXT_ENCODER]))
        del ft_sd
        if clip is None or base.clip is None:
            clip = base.clip
        lines.append(f"fine-tune: full checkpoint {finetuned_name} ({family}, sha256 "
                     f"{finetune['sha256'][:12]}); {describe(finetune['change'])}")
    else:
        finetuned, clip, records = base.model, base.clip, []
        for name, strength in loras:
            finetuned, clip, record = _apply_lora(finetuned, clip, base_name, family, base.norms, name, strength)
            records.append(record)
            lines.append(f"LoRA {name} x{strength:g}: {record['tensors_applied']}/"
                         f"{record['tensors_total']} tensors applied ({record['unet_layers']} UNet "
                         f"layers, {record['text_encoder_layers']} text-encoder layers); "
                         f"{describe(record['change'])}")
        finetune = {"kind": "lora", "loras": records}
    provenance = {"family": family, "base": base_rec, "finetune": finetune}
    base_model = base.model.clone()
    finetuned = finetuned.clone()
    base_model.model_options["finextract"] = {"role": "base", **provenance}
    finetuned.model_options["finextract"] = {"role": "finetuned", **provenance}
    return Pair(base_model, finetuned, clip, base.clip, base.vae, "\n".join(lines))
