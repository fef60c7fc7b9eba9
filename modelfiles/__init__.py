"""What a model file is, host-agnostic: whether it can be read (and why not), what it holds
(a LoRA, a checkpoint, a text encoder, a VAE: from its tensor names), its provenance
(sha256 of the file and of its tensors, cached), what a fine-tune changed, the key spellings
and shapes a LoRA file may use, and how the project's files are written (atomically). Plain
Python and torch; nothing here imports ComfyUI."""
from .atomic import atomic_write
from .content import (COMPONENTS, TEXT_ENCODER, UNET, Change, compare_files, component_norms,
                      describe, squared_norm)
from .kinds import CHECKPOINT, LORA, LORA_KEY_ENDINGS, OTHER, TEXT_ENCODER_FILE, VAE, file_kind, kind_of
from .lora_keys import (MIN_APPLIED_FRACTION, applied_tensors, as_matrix, lora_delta, lora_family, lora_scale,
                        low_rank_change, text_encoder_tensors, with_diffusers_aliases)
from .provenance import content_sha256, file_identity, file_record, file_sha256, generation_record
from .reading import (NotSafetensorsError, check_safetensors, load_safetensors, model_file_problem,
                      read_header)

NONE = "none"
"""The file-list choice that leaves a slot empty (loader, caption inverter, metrics, CLI)."""
LORA_SLOTS = 3
"""LoRAs one fine-tune may combine (the Dual Model Loader's slots, ``finextract audit --lora``)."""

__all__ = ["NONE", "LORA_SLOTS", "atomic_write", "CHECKPOINT", "LORA", "LORA_KEY_ENDINGS", "OTHER",
           "TEXT_ENCODER_FILE", "VAE", "file_kind", "kind_of", "MIN_APPLIED_FRACTION", "applied_tensors", "as_matrix", "low_rank_change", "lora_family",
           "text_encoder_tensors", "with_diffusers_aliases", "file_identity", "file_record", "file_sha256", "content_sha256",
           "generation_record",
           "COMPONENTS", "UNET", "TEXT_ENCODER", "Change", "compare_files", "component_norms", "describe",
           "lora_delta", "lora_scale", "squared_norm", "NotSafetensorsError", "check_safetensors", "load_safetensors",
           "model_file_problem", "read_header"]
