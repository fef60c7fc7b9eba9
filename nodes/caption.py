"""FineXtractCaptionInverter: recover the training caption from the checkpoint pair (Appendix A).

Adapters from ComfyUI objects to :mod:`..caption`'s plain inputs:

* the text-reading weights of a MODEL *as sampled* (:mod:`..caption.families`: UNet cross-attention
  K/V, SD3's ``context_block.attn.qkv`` and FLUX's double-block ``txt_attn.qkv`` with their text
  embedder), i.e. with its patches (a LoRA applied by the loader or a LoraLoader) merged by
  ComfyUI's own ``calculate_weight``, so every LoRA format ComfyUI reads works here (a diffusers
  ``add_k_proj`` LoRA patches a slice of the fused ``qkv``);
* the CLIP as a :class:`..caption.encoders.PromptEncoder`: a float32 copy of each text model (the
  loaded weights are inference-mode tensors, which autograd may not save), run with the layer the
  CLIP is set to (clip-skip / SDXL's penultimate layer); which text models form the context rows
  and in which order: :data:`TEXT_MODELS`;
* file names for the metadata: from the provenance FineXtractDualModelLoader attaches
  (``model_options["finextract"]``), plus an optional file picked here.
"""
from __future__ import annotations

import copy

import torch

import comfy.lora
import comfy.model_management
import comfy.utils
import folder_paths
from comfy.ldm.modules.attention import optimized_attention_for_device
from comfy_api.v0_0_2 import io

from . import schema
from ..caption.encoders import ConcatenatedEncoders, SequenceEncoder
from ..caption.pez import OPTIMISERS, ROWS
from ..caption.ranking import OBJECTIVES
from ..caption.recover import METHODS, VOCABULARIES, CaptionRequest, recover_caption
from ..caption.families import reads
from ..caption.weight_delta import from_state_dicts
from ..modelfiles import NONE
from .pair import model_folder



def _text_reading_weights(model) -> dict[str, torch.Tensor]:
    """The text-reading weights (and text embedders) of a ModelPatcher, patches merged, float32."""
    out = {}
    for key, entries in model.get_key_patches("diffusion_model.").items():
        if not reads(key):
            continue
        weight, convert = entries[0]
        weight = convert(weight.detach().to("cpu", torch.float32).clone(), inplace=False)
        if len(entries) > 1:
            weight = comfy.lora.calculate_weight(entries[1:], weight, key, intermediate_dtype=torch.float32)
        out[key] = weight
    return out


def _changed_keys(base, finetuned) -> list[str]:
    """Weights that differ between two ModelPatchers: patched in one only, or different tensors
    (only computed to say what changed when the K/V layers did not)."""
    a, b = base.model_state_dict(), finetuned.model_state_dict()
    differ = {k for k in a if k in b and a[k].data_ptr() != b[k].data_ptr()
              and a[k].shape == b[k].shape and not torch.equal(a[k], b[k])}
    return sorted(differ | (set(base.patches) ^ set(finetuned.patches)))


TEXT_MODELS = {
    # ComfyUI text-encoder class → its text models (attribute of the model and of the tokenizer)
    # whose rows form the context the denoiser reads, concatenated along the features in this order
    "SDXLClipModel": ("clip_l", "clip_g"),  # 768 ‖ 1280 = 2048, one CLIP BPE vocabulary
    "SD3ClipModel": ("clip_l", "clip_g"),   # ‖ zeros to 4096 (the family's stream pads); T5's rows not read
    "FluxClipModel": ("t5xxl",),            # FLUX reads T5's rows only (CLIP-L gives the pooled vector)
}
"""One-encoder CLIPs (SD1.x, SD2.x, and a stand-alone CLIP-L as the FLUX tests load) name their
text model in ``.clip`` and are read as it. Which family's weights read these rows, and how:
:mod:`..caption.families`."""

T5_NOT_SUPPORTED = (
    "caption inversion through T5-XXL is not supported yet: it needs T5's rows as a differentiable "
    "function of input embeddings (ComfyUI's T5 runs relative-position attention with no BOS token) "
    "and its SentencePiece vocabulary (32,100 pieces, '\u2581' marking word starts, decoded as such; "
    "ComfyUI ships the tokenizer in comfy/text_encoders/t5_tokenizer). With no T5-XXL weights here it could not be "
    "tested. Use the training metadata, or a CLIP-fed model")


def _text_models(clip):
    """(SDClipModel, SDTokenizer) pairs of a CLIP whose rows form the context, in order
    (:data:`TEXT_MODELS`). An encoder the CLIP lacks (SD3 without CLIP-G) is zero-filled by
    ComfyUI: trailing ones are left to the family's zero padding; a leading one is refused."""
    model, tokenizer = clip.cond_stage_model, clip.tokenizer
    names = next((TEXT_MODELS[c.__name__] for c in type(model).__mro__ if c.__name__ in TEXT_MODELS), None)
    if names is None and isinstance(getattr(model, "clip", None), str) and isinstance(getattr(tokenizer, "clip", None), str):
        return [(getattr(model, model.clip), getattr(tokenizer, tokenizer.clip))]
    if names is None:
        raise ValueError(f"caption inversion reads CLIP text encoders (SD1.x, SD2, SDXL, SD3's CLIP-L/G, a "
                         f"CLIP-fed FLUX); this CLIP holds {type(model).__name__}")
    if "t5xxl" in names:
        raise ValueError(T5_NOT_SUPPORTED)
    present = [getattr(model, n, None) is not None for n in names]
    while present and not present[-1]:
        present.pop()
    if not present or not all(present):
        raise ValueError(f"this {type(model).__name__} lacks {names[present.index(False)] if present else names[0]} "
                         f"before another text model: caption inversion needs the first one present")
    return [(getattr(model, n), getattr(tokenizer, n)) for n in names[:len(present)]]


def _sequence_encoder(sd_clip, tokenizer) -> SequenceEncoder:
    """One ComfyUI CLIP text model as a :class:`SequenceEncoder` (causal: BOS + prompt).

    The layers are run here, out of place, because ComfyUI's CLIPLayer adds its residuals in place,
    which autograd cannot differentiate through; same modules, same order, same result. They run
    on a float32 copy (the loaded weights are half-precision inference tensors, which autograd may
    not save), made on the first run only: a ranking over the raw token table never runs the
    encoder, and SDXL's copy is 3.3 GB."""
    text_model = sd_clip.transformer.text_model
    layer_count = len(text_model.encoder.layers)
    last = sd_clip.layer == "last"
    stop = layer_count if last else sd_clip.layer_idx % layer_count + 1
    normed = last or sd_clip.layer_norm_hidden_state
    copied = []

    def run(embeds):
        if not copied:
            copied.append(copy.deepcopy(text_model).to("cpu", torch.float32).requires_grad_(False))
        model = copied[0]
        n = embeds.shape[1]
        x = embeds + model.embeddings.position_embedding.weight[:n].to(embeds)
        mask = torch.full((n, n), -torch.finfo(x.dtype).max, dtype=x.dtype).triu_(1)
        attention = optimized_attention_for_device(x.device, mask=True, small_input=True)
        for layer in model.encoder.layers[:stop]:
            x = x + layer.self_attn(layer.layer_norm1(x), mask, attention)
            x = x + layer.mlp(layer.layer_norm2(x))
        return model.final_layer_norm(x) if normed else x

    table = text_model.embeddings.token_embedding.weight.detach().to("cpu", torch.float32, copy=True)
    return SequenceEncoder(table, run, tokenizer.start_token, tokenizer.end_token, tokenizer.pad_token)


def prompt_encoder(clip):
    """The CLIP as a PromptEncoder, with the layer the CLIP is set to, and its tokenizer."""
    clip.load_model()
    clip.cond_stage_model.reset_clip_options()
    if clip.layer_idx is not None:
        clip.cond_stage_model.set_clip_options({"layer": clip.layer_idx})
    try:
        with torch.inference_mode(False):
            parts = [(_sequence_encoder(m, t), t) for m, t in _text_models(clip)]
    finally:
        clip.cond_stage_model.reset_clip_options()
    encoders = [e for e, _ in parts]
    return (encoders[0] if len(encoders) == 1 else ConcatenatedEncoders(encoders)), parts[0][1]


def _decoder(tokenizer):
    inverse = tokenizer.inv_vocab

    def decode(ids):
        return "".join(inverse.get(i, "") for i in ids).replace("</w>", " ").strip()

    return decode


def _metadata_files(models, picked: str) -> list[str]:
    """Full paths of the fine-tune's files, from the loader's provenance and the picked file."""
    names = []
    for model in models:
        record = model.model_options.get("finextract", {}).get("finetune", {})
        if record.get("kind") == "checkpoint":
            names.append(model_folder(record["file"]))
        names += [("loras", lora["file"]) for lora in record.get("loras", [])]
    if picked != NONE:
        folder, name = picked.split("/", 1)
        names.append((folder, name))
    paths = [folder_paths.get_full_path(folder, name) for folder, name in dict.fromkeys(names)]
    return [p for p in paths if p]


class FineXtractCaptionInverter(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        files = [NONE] + [f"loras/{n}" for n in folder_paths.get_filename_list("loras")] + \
            [f"checkpoints/{n}" for n in folder_paths.get_filename_list("checkpoints")]
        return schema(
            node_id="FineXtractCaptionInverter", display_name="FineXtract Caption Inverter",
            category="finextract",
            description=("Recovers the training caption of a fine-tune, strongest source first: the "
                         "file's training metadata (kohya-ss, ai-toolkit, OneTrainer, modelspec keys), "
                         "the weight change of the layers that read the text (UNet cross-attention K/V; "
                         "SD3 / FLUX: the K and V of each block's text-stream qkv) ranked over the "
                         "vocabulary (paper Eq. 17/19), or hard-prompt extraction through the text "
                         "encoder (Algorithm 1). CLIP text encoders only: a FLUX or SD3 conditioned "
                         "through T5-XXL is refused for ranking/PEZ (metadata still works). Says which "
                         "source produced the caption, and refuses pairs whose text-reading layers did "
                         "not change."),
            search_aliases=["caption inverter", "recover caption", "trigger word", "prompt extraction",
                            "pez", "caption extraction"],
            inputs=[
                io.Model.Input("base_model", tooltip="The pretrained model (β⁻ of Appendix A)."),
                io.Model.Input("finetuned_model", tooltip="The fine-tuned model, LoRAs applied (β⁺)."),
                io.Clip.Input("clip", tooltip="The text encoder the fine-tune is conditioned with; its tokenizer's vocabulary is searched."),
                io.Combo.Input("method", options=list(METHODS), default="auto",
                               tooltip="auto: metadata if it holds a caption, else PEZ. metadata / ranking (top-L tokens of Eq. 17/19) / pez (Algorithm 1)."),
                io.Int.Input("length", default=3, min=1, max=75, tooltip="L: at most this many tokens (paper: 3 and 7)."),
                io.Int.Input("iterations", default=1000, min=0, max=100000, tooltip="PEZ iterations (paper: 1000)."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, tooltip="Seed of PEZ's random starting prompt."),
                io.Combo.Input("objective", options=list(OBJECTIVES), default="eq19",
                               tooltip="eq19: PCA of stacked weights before/after, then the difference (multi-word captions, the paper's PEZ target). eq17: norm of the weight change (single-token captions)."),
                io.Combo.Input("optimiser", options=list(OPTIMISERS), default="pgd",
                               tooltip="pgd: the paper's L2-PGD (normalised gradient steps). adamw: PEZ as published (AdamW, lr 0.1)."),
                io.Float.Input("lr", default=0.1, min=0.0, max=10.0, step=0.01, tooltip="PEZ step size / learning rate (PEZ: 0.1)."),
                io.Combo.Input("vocabulary", options=list(VOCABULARIES), default="raw",
                               tooltip="Embeddings ranked: raw = the CLIP's input token table (seconds, an approximation); contextual = each token's encoder output as the cross-attention sees it (exact per the paper; minutes for CLIP-L on CPU)."),
                io.Combo.Input("rows", options=list(ROWS), default="sequence",
                               tooltip="Context rows PEZ scores: sequence = all 77 rows of E(c) as the cross-attention reads them (paper); prompt = the prompt's own rows only (about 3x faster on CLIP-L)."),
                io.Int.Input("deflate", default=0, min=0, max=16,
                               tooltip="eq17 only: drop this many strongest directions of the weight change first (0 = the paper's Eq. 17). The strongest is usually the padding rows every prompt shares; 1 found planted tokens where 0 did not on our padded toy world."),
                io.Combo.Input("metadata_file", options=files, default=NONE, optional=True,
                               tooltip="Fine-tune file whose training metadata to read, if the models did not come from FineXtractDualModelLoader."),
            ],
            outputs=[
                io.String.Output("caption", tooltip="The recovered caption: wire it into the sampling graph's text encoder."),
                io.String.Output("ranked_tokens", tooltip="Tokens ranked by the weight-space score (or metadata tag counts), one 'token<TAB>score' per line."),
                io.String.Output("source", tooltip="Which source produced the caption, the evidence with its origin, layers changed, timings."),
            ],
        )

    @classmethod
    def execute(cls, base_model, finetuned_model, clip, method, length, iterations, seed, objective,
                optimiser, lr, vocabulary, rows, deflate, metadata_file=NONE) -> io.NodeOutput:
        request = CaptionRequest(method, length, iterations, seed, objective, optimiser, lr, vocabulary,
                                 rows=rows, deflate=deflate)
        encoder, tokenizer = prompt_encoder(clip)
        specials = {tokenizer.start_token, tokenizer.end_token, tokenizer.pad_token} - {None}
        allowed = torch.tensor([i for i in range(encoder.token_embedding.shape[0]) if i not in specials])
        bar = comfy.utils.ProgressBar(max(iterations, 1))
        with torch.inference_mode(False):
            result = recover_caption(
                request,
                layers=lambda: from_state_dicts(
                    _text_reading_weights(base_model), _text_reading_weights(finetuned_model), "base/fine-tuned MODEL pair",
                    changed_keys=lambda: _changed_keys(base_model, finetuned_model)),
                encoder=encoder, decode=_decoder(tokenizer), allowed=allowed,
                metadata_files=_metadata_files((finetuned_model, base_model), metadata_file),
                progress=lambda done, total: bar.update_absolute(done, total),
                check_interrupt=comfy.model_management.throw_exception_if_processing_interrupted)
        return io.NodeOutput(result.caption, result.ranked_text(), "\n".join(result.source))


NODES = [FineXtractCaptionInverter]
