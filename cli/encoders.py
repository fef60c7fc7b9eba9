"""The text encoders, the VAE and FLUX.1's guidance value of one model's audit.

A checkpoint brings its text encoders and its VAE. A diffusion model alone (ComfyUI's split
layout, in which FLUX.1 [dev], SD3.5 and Qwen-Image ship) brings neither: the user names the
files ComfyUI's own CLIPLoader / DualCLIPLoader / TripleCLIPLoader and VAELoader would load
(``--clip FILE[,FILE2[,FILE3]] --clip-type TYPE --vae FILE``, or a manifest's ``clip``,
``clip_type`` and ``vae`` columns), and they are loaded through those very nodes
(:meth:`..host.Library.run_stock`), each file under a name only it has
(:meth:`..host.Library.register_file`). A VAE file also replaces a checkpoint's own VAE (as SD1.5
users decode with another VAE); text-encoder files beside a checkpoint's own text encoders are
refused: the fine-tune's text-encoder change (a LoRA's text-encoder tensors, a full fine-tune's
CLIP) is applied to the checkpoint's and would be dropped. A LoRA's text-encoder tensors, which
the pair loader sets aside on a diffusion-model-only base (it owns no text encoder), are applied
to the caption's text encoder by ComfyUI's LoraLoader, as the loader's report advises a ComfyUI
user: the caption then goes through the text encoder the fine-tune was trained with, the empty
prompt through the base's.

Each file is recorded (name, bytes, sha256 of the file and of its tensors) in the run's identity
(:func:`.shards.run_identity`), which saved chunks and shards are checked against and which the
report carries as its provenance: the report names every file that made its images (text
encoders) and decoded them for scoring (VAE).

FLUX.1 [dev] is guidance-distilled: its conditioning carries the guidance value the creator
samples with (ComfyUI's FluxGuidance; 3.5 when absent). Both prompts go through ComfyUI's
FluxGuidance node at ``--flux-guidance``, the empty prompt at the caption's value: the distilled
model's empty-prompt prediction estimates the unconditional one at every value, and the value the
creator samples with keeps the fine-tune's caption prediction the one its creator sees
(``docs/guidance.md``, the guider's ``negative`` input). The value joins the run's identity.
"""
from __future__ import annotations

import pathlib
from dataclasses import dataclass

from ..host import HostError
from ..modelfiles import file_record
from . import UsageError

CLIP_LOADERS = {1: "CLIPLoader", 2: "DualCLIPLoader", 3: "TripleCLIPLoader"}
"""ComfyUI's text-encoder loader node for a number of files."""
TRIPLE_TYPE = "sd3"
"""The one type of three files: ComfyUI's TripleCLIPLoader takes no type and builds SD3's text
encoder (CLIP-L, CLIP-G, T5-XXL) from any three (``comfy.sd.load_text_encoder_state_dicts``)."""
GUIDANCE_FAMILIES = ("Flux",)
"""The families (ComfyUI's names, as in :data:`..nodes.pair.FAMILIES`) whose diffusion model takes
a distilled guidance value with its conditioning: FLUX.1 [dev]."""
FIX_CLIP = ("--clip FILE[,FILE2[,FILE3]] --clip-type TYPE (manifest: columns clip, clip_type), the files "
            "ComfyUI's CLIPLoader / DualCLIPLoader / TripleCLIPLoader take (FLUX.1: "
            "t5xxl_fp16.safetensors,clip_l.safetensors with type flux; SD3.5: clip_l, clip_g and t5xxl)")
FIX_VAE = "--vae FILE (manifest: column vae), the file ComfyUI's VAELoader takes (FLUX.1: ae.safetensors)"


def clip_type_problem(comfy, files: int, clip_type: str | None) -> str | None:
    """Why ``clip_type`` is no type ComfyUI's loader of ``files`` text-encoder files takes (the
    node's own list: a node run as a library is not validated as a prompt is, and ComfyUI reads
    an unknown name as ``stable_diffusion``), or None."""
    loader = CLIP_LOADERS[files]
    if files == 3:
        if clip_type in (None, TRIPLE_TYPE):
            return None
        choices = [TRIPLE_TYPE]
    else:
        choices = comfy.options(loader, "type")
        if clip_type in choices:
            return None
    return (f"text-encoder type {clip_type!r} (--clip-type, manifest column clip_type): ComfyUI's {loader} "
            f"of {files} file{'s' if files > 1 else ''} takes none of that name; choose one of {', '.join(choices)}")


@dataclass
class Encoders:
    """What encodes one model's prompts and decodes its latents, and its record."""
    caption_clip: object
    """Encodes the caption: the fine-tuned text encoder where the fine-tune changed it."""
    empty_clip: object
    """Encodes the empty prompt: the base's text encoder."""
    vae: object
    record: dict
    """``text_encoders`` (loader, type, file records; ``lora_layers``: the layers a LoRA's
    text-encoder tensors reached on the caption's), ``vae`` (file record), ``flux_guidance``: each
    only where it applies. Part of the run's identity."""

    def describe(self) -> str:
        """One line for stderr: what encodes the prompts and decodes the latents."""
        r = self.record
        te = r.get("text_encoders")
        if te is None:
            parts = ["text encoders: the base checkpoint's"]
        else:
            parts = [f"text encoders: {te['loader']} ({te['type']}) of "
                     f"{', '.join(pathlib.PurePath(f['file']).name for f in te['files'])}"]
            if "lora_layers" in te:
                parts[0] += f", the caption's with the LoRA's text-encoder tensors on {te['lora_layers']} layers"
        parts.append(f"VAE: VAELoader of {pathlib.PurePath(r['vae']['file']).name}" if "vae" in r
                     else "VAE: the base checkpoint's")
        if "flux_guidance" in r:
            parts.append(f"FluxGuidance {r['flux_guidance']:g} on both prompts")
        return "; ".join(parts)

    def prompts(self, comfy, caption: str) -> tuple:
        """(positive, negative): the caption and the empty prompt encoded as ComfyUI's
        CLIPTextEncode does, each through FluxGuidance at the run's value where the family takes
        one."""
        encoded = []
        for clip, text in ((self.caption_clip, caption), (self.empty_clip, "")):
            conditioning = clip.encode_from_tokens_scheduled(clip.tokenize(text))
            if "flux_guidance" in self.record:
                (conditioning,) = comfy.run_stock("FluxGuidance", conditioning=conditioning,
                                                  guidance=self.record["flux_guidance"])
            encoded.append(conditioning)
        return tuple(encoded)


def lora_text_encoders(comfy, spec, pair, clip, record: dict):
    """``clip`` with the text-encoder tensors the pair's LoRAs could not apply (no text encoder
    of the base's own) applied by ComfyUI's LoraLoader at each LoRA's strength (its model
    strength 0), and how many text-encoder layers they reached written to ``record``;
    :class:`UsageError` when such tensors reach none (made for another text encoder)."""
    loras = [r for r in pair.finetuned.model_options["finextract"]["finetune"].get("loras", [])
             if r.get("text_encoder_tensors_not_applied")]
    if not loras:
        return clip
    patched = clip
    for lora in loras:
        (_, patched) = comfy.run_stock("LoraLoader", model=pair.base, clip=patched, lora_name=lora["file"],
                                       strength_model=0.0, strength_clip=lora["strength"])
    layers = len(patched.patcher.patches) - len(clip.patcher.patches)
    if not layers:
        raise UsageError(f"{spec.name}: the text-encoder tensors of LoRA {loras[0]['file']!r} reach no layer of "
                         f"the --clip text encoders ({', '.join(str(p) for p in spec.clip)}): the LoRA was made "
                         f"for another text encoder; give the ones its base was trained with")
    record["lora_layers"] = layers
    return patched


def load(comfy, spec, pair, guidance: float) -> Encoders:
    """The model's encoders and VAE: the spec's files through ComfyUI's loaders, else the pair's
    own (a checkpoint's); :class:`UsageError` naming the model when neither has them, or when
    text-encoder files come beside a checkpoint's own text encoders."""
    def register(folder, path):
        try:
            return comfy.register_file(folder, path)
        except HostError as exc:  # a name ComfyUI would resolve to another file
            raise UsageError(f"{spec.name}: {exc}") from exc

    record = {}
    if spec.clip:
        if pair.clip is not None:
            raise UsageError(
                f"{spec.name}: base {spec.base} holds its own text encoders, to which the fine-tune's "
                f"text-encoder change is applied; text-encoder files are for a base without them (a "
                f"diffusion model only): leave --clip (column clip) out")
        if (problem := clip_type_problem(comfy, len(spec.clip), spec.clip_type)) is not None:
            raise UsageError(f"{spec.name}: {problem}")
        names = [register("text_encoders", path) for path in spec.clip]
        loader = CLIP_LOADERS[len(names)]
        if len(names) == 1:
            inputs = {"clip_name": names[0], "type": spec.clip_type}
        else:
            inputs = {f"clip_name{i}": name for i, name in enumerate(names, 1)}
            if len(names) == 2:
                inputs["type"] = spec.clip_type
        (clip,) = comfy.run_stock(loader, **inputs)
        record["text_encoders"] = {"loader": loader, "type": spec.clip_type or TRIPLE_TYPE,
                                   "files": [file_record(str(p), n) for p, n in zip(spec.clip, names)]}
        empty_clip, caption_clip = clip, lora_text_encoders(comfy, spec, pair, clip, record["text_encoders"])
    elif pair.clip is None:
        raise UsageError(f"{spec.name}: base {spec.base} holds no text encoder: give its text encoders "
                         f"with {FIX_CLIP}")
    else:
        caption_clip, empty_clip = pair.clip, pair.base_clip
    if spec.vae:
        name = register("vae", spec.vae)
        (vae,) = comfy.run_stock("VAELoader", vae_name=name)
        record["vae"] = file_record(str(spec.vae), name)
    elif pair.vae is None:
        raise UsageError(f"{spec.name}: base {spec.base} holds no VAE: give it with {FIX_VAE}")
    else:
        vae = pair.vae
    if pair.base.model_options["finextract"]["family"] in GUIDANCE_FAMILIES:
        record["flux_guidance"] = guidance
    return Encoders(caption_clip, empty_clip, vae, record)
