"""Loading a (base, fine-tune) pair into ComfyUI objects, with the checks guidance needs.

Guidance between two models that are in fact the same extracts nothing, silently; so does a pair
from two model families. This module refuses both with messages that name the files, as it does
damaged files and a LoRA whose tensors do not fit the base's weights; it counts how much of each
LoRA applied, and attaches provenance to the returned models.

Provenance contract: every MODEL this loader returns carries
``model.model_options["finextract"] = {"role": "base" | "finetuned", "family": str,
"base": file_record, "finetune": {"kind": "checkpoint", **file_record} |
{"kind": "lora", "loras": [file_record + strength + tensors_applied/tensors_total]}}``
(file records: file, bytes, sha256; see :mod:`..modelfiles.provenance`). ComfyUI copies
model_options on clone, so the record follows the model through patch nodes.
"""
from __future__ import annotations

import dataclasses

import torch

import comfy.lora
import comfy.lora_convert
import comfy.model_detection
import comfy.sd
import comfy.utils
import comfy.weight_adapter
import folder_paths

from ..modelfiles import (MIN_APPLIED_FRACTION, applied_tensors, as_matrix, file_record, low_rank_change,
                          model_file_problem, with_diffusers_aliases)


class PairError(ValueError):
    """A pair of files that cannot be audited together."""


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
        raise PairError(f"{what} {name!r} is not in ComfyUI's {folder!r} folder")
    problem = model_file_problem(path, what)
    if problem is not None:
        raise PairError(problem)
    try:
        sd, metadata = comfy.utils.load_torch_file(path, safe_load=True, return_metadata=True)
    except Exception as exc:  # safetensors / torch raise many types for damaged files
        raise PairError(f"{what} {name!r} cannot be read (corrupt, truncated or not a model "
                        f"file): {str(exc).splitlines()[0]}") from exc
    return path, sd, metadata


def _family(sd: dict, name: str, what: str) -> str:
    prefix = comfy.model_detection.unet_prefix_from_state_dict(sd)
    config = comfy.model_detection.model_config_from_unet(sd, prefix)
    if config is None:
        raise PairError(f"{what} {name!r}: ComfyUI recognises no diffusion model in it")
    return type(config).__name__


def _load(sd: dict, metadata, name: str):
    model, clip, vae, _ = comfy.sd.load_state_dict_guess_config(
        sd, output_vae=True, output_clip=True,
        embedding_directory=folder_paths.get_folder_paths("embeddings"), metadata=metadata)
    if model is None:
        raise PairError(f"checkpoint {name!r} holds no diffusion model")
    return model, clip, vae


def _same_text_encoder(clip_a, clip_b) -> bool:
    sd_a, sd_b = clip_a.cond_stage_model.state_dict(), clip_b.cond_stage_model.state_dict()
    return sd_a.keys() == sd_b.keys() and all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)


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
            raise PairError(
                f"LoRA {name!r} does not fit base checkpoint {base_name!r}: its tensors {tensors} make "
                f"{made}, but the model's weight {target} has shape {weight_shape}. The LoRA was made "
                f"for a model of another size (another base or variant of this family) or is damaged; "
                f"use the LoRA trained on this base.")


def _apply_lora(model, clip, base_name: str, name: str, strength: float):
    """ComfyUI's load_lora_for_models, counting what applied instead of only logging it."""
    path, lora, _ = _read("loras", name, "LoRA")
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
        raise PairError(
            f"LoRA {name!r} does not fit base checkpoint {base_name!r}: {len(applied)} of {total} "
            f"tensors reached a layer (at least {MIN_APPLIED_FRACTION:.0%} required), e.g. "
            f"unmatched {missing}. It was probably made for another model family, or uses a key "
            f"spelling ComfyUI does not know.")
    te_layers = sum(1 for key in reached if not key.startswith("diffusion_model."))
    record = file_record(path, name, strength=strength, tensors_applied=len(applied),
                         tensors_total=total, unet_layers=len(reached) - te_layers,
                         text_encoder_layers=te_layers)
    return model, clip, record


def load_pair(base_name: str, finetuned_name: str | None, loras: list[tuple[str, float]]) -> Pair:
    """Load the base checkpoint and its fine-tune: a full checkpoint or LoRAs applied to the base."""
    if (finetuned_name is None) == (not loras):
        raise PairError("pick the fine-tune as either a checkpoint or one or more LoRAs (not both, "
                        "not neither)")
    base_path, base_sd, base_meta = _read("checkpoints", base_name, "base checkpoint")
    family = _family(base_sd, base_name, "base checkpoint")
    base_rec = file_record(base_path, base_name)
    lines = [f"base: {base_name} ({family}, sha256 {base_rec['sha256'][:12]})"]
    if finetuned_name is not None:
        ft_path, ft_sd, ft_meta = _read("checkpoints", finetuned_name, "fine-tuned checkpoint")
        ft_family = _family(ft_sd, finetuned_name, "fine-tuned checkpoint")
        if ft_family != family:
            raise PairError(f"base checkpoint {base_name!r} is {family} but fine-tuned checkpoint "
                            f"{finetuned_name!r} is {ft_family}: a pair must share one model family")
        finetune = {"kind": "checkpoint", **file_record(ft_path, finetuned_name)}
        if finetune["sha256"] == base_rec["sha256"]:
            raise PairError(f"fine-tuned checkpoint {finetuned_name!r} is the same file as base "
                            f"{base_name!r}: guidance between identical models extracts nothing")
    base, base_clip, vae = _load(base_sd, base_meta, base_name)
    del base_sd
    if finetuned_name is not None:
        finetuned, clip, _ = _load(ft_sd, ft_meta, finetuned_name)
        del ft_sd
        if clip is None or base_clip is None or _same_text_encoder(clip, base_clip):
            clip = base_clip
        lines.append(f"fine-tune: full checkpoint {finetuned_name} ({family}, sha256 "
                     f"{finetune['sha256'][:12]}); text encoder "
                     f"{'fine-tuned' if clip is not base_clip else 'unchanged'}")
    else:
        finetuned, clip, records = base, base_clip, []
        for name, strength in loras:
            finetuned, clip, record = _apply_lora(finetuned, clip, base_name, name, strength)
            records.append(record)
            lines.append(f"LoRA {name} x{strength:g}: {record['tensors_applied']}/"
                         f"{record['tensors_total']} tensors applied ({record['unet_layers']} UNet "
                         f"layers, {record['text_encoder_layers']} text-encoder layers)")
        finetune = {"kind": "lora", "loras": records}
    provenance = {"family": family, "base": base_rec, "finetune": finetune}
    base = base.clone()
    finetuned = finetuned.clone()
    base.model_options["finextract"] = {"role": "base", **provenance}
    finetuned.model_options["finextract"] = {"role": "finetuned", **provenance}
    return Pair(base, finetuned, clip, base_clip, vae, "\n".join(lines))
