"""FineXtractDualModelLoader: the base and its fine-tune (full checkpoint or LoRAs), each base or
full fine-tune a checkpoint or a diffusion model only (:mod:`.pair`: the two layouts)."""
from __future__ import annotations

import folder_paths
from comfy_api.v0_0_2 import io


from . import schema
from ..modelfiles import LORA_SLOTS, NONE
from .pair import load_pair, model_choices


class FineXtractDualModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        loras = [NONE] + folder_paths.get_filename_list("loras")
        lora_inputs = []
        for i in range(1, LORA_SLOTS + 1):
            lora_inputs += [
                io.Combo.Input(f"lora_{i}", options=loras, default=NONE,
                               tooltip=f"LoRA #{i} of the fine-tune, from the loras folder, applied to the base (leave 'none' for a full checkpoint)."),
                io.Float.Input(f"strength_{i}", default=1.0, min=-10.0, max=10.0, step=0.05,
                               tooltip=f"Strength of LoRA #{i} (UNet and text encoder; a diffusion-model-only base takes its UNet part only, the report says how to apply the rest to your CLIP)."),
            ]
        return schema(
            node_id="FineXtractDualModelLoader", display_name="FineXtract Dual Model Loader",
            category="finextract",
            description=("Loads a base model and the fine-tune under audit, either a full "
                         "checkpoint or up to three LoRAs applied to the base. The base and a full "
                         "fine-tune are all-in-one checkpoints (checkpoints folder) or diffusion "
                         "models only (diffusion_models folder, listed as diffusion_models/<name>: "
                         "e.g. FLUX.1 [dev]'s flux1-dev.safetensors as ComfyUI's own template loads "
                         "it). With a diffusion-model-only base the loader returns the two models "
                         "only: its clip, base_clip and vae outputs are empty, and your own "
                         "DualCLIPLoader / CLIPLoader and VAELoader feed the prompts and the "
                         "clustering. Refuses pairs of "
                         "different model families, LoRAs that do not fit the base, damaged "
                         "files, and fine-tunes that change no weight of the UNet or text "
                         "encoder (judged by the files' tensors: a re-saved base, a LoRA whose "
                         "update is zero); the report says how many LoRA tensors applied and how "
                         "far the fine-tune moved the UNet and the text encoder (‖ΔW‖/‖W‖)."),
            search_aliases=["dual model loader", "base and fine-tune", "finextract loader", "lora audit"],
            inputs=[
                io.Combo.Input("base_checkpoint", options=model_choices(),
                               tooltip="The pretrained model the fine-tune started from: a checkpoint (checkpoints folder), or a diffusion model only (diffusion_models or unet folder, listed as diffusion_models/<name>; its text encoders and VAE then come from your own CLIP and VAE loader nodes)."),
                io.Combo.Input("finetuned_checkpoint", options=[NONE] + model_choices(),
                               default=NONE, tooltip="The fine-tuned (e.g. DreamBooth) model, a checkpoint or a diffusion model only (diffusion_models/<name>: compared with the base's diffusion model), or 'none' when the fine-tune is given as LoRAs."),
                *lora_inputs,
            ],
            outputs=[
                io.Model.Output("base_model", tooltip="The base model."),
                io.Model.Output("finetuned_model", tooltip="The fine-tuned model (base + LoRAs shares the base weights)."),
                io.Clip.Output("clip", tooltip="The fine-tuned text encoder (the base one if the fine-tune left it unchanged). Empty when the base is a diffusion model only: use your own CLIP loader's."),
                io.Vae.Output("vae", tooltip="The base checkpoint's VAE. Empty when the base is a diffusion model only: use your own VAELoader's."),
                io.String.Output("report", tooltip="Files, families, sha256, how many tensors of each LoRA applied, and the relative change ‖ΔW‖/‖W‖ of the UNet and the text encoder (or 'unchanged')."),
                io.Clip.Output("base_clip", tooltip="The base text encoder, for the empty prompt of model guidance. Empty when the base is a diffusion model only: use your own CLIP loader's."),
            ],
        )

    @classmethod
    def execute(cls, base_checkpoint, finetuned_checkpoint, **slots) -> io.NodeOutput:
        loras = [(slots[f"lora_{i}"], slots[f"strength_{i}"]) for i in range(1, LORA_SLOTS + 1)
                 if slots[f"lora_{i}"] != NONE]
        ft = None if finetuned_checkpoint == NONE else finetuned_checkpoint
        pair = load_pair(base_checkpoint, ft, loras)
        return io.NodeOutput(pair.base, pair.finetuned, pair.clip, pair.vae, pair.report, pair.base_clip)


NODES = [FineXtractDualModelLoader]
