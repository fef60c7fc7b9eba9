"""What a model file is, host-agnostic: whether it can be read (and why not), its provenance
(sha256, cached) and the key spellings a LoRA file may use. Plain Python; nothing here imports
ComfyUI."""
from .lora_keys import MIN_APPLIED_FRACTION, applied_tensors, as_matrix, low_rank_change, with_diffusers_aliases
from .provenance import file_record, file_sha256, generation_record
from .reading import (NotSafetensorsError, check_safetensors, load_safetensors, model_file_problem,
                      read_header)

NONE = "none"
"""The file-list choice that leaves a slot empty (loader, caption inverter, metrics, CLI)."""
LORA_SLOTS = 3
"""LoRAs one fine-tune may combine (the Dual Model Loader's slots, ``finextract audit --lora``)."""

__all__ = ["NONE", "LORA_SLOTS", "MIN_APPLIED_FRACTION", "applied_tensors", "as_matrix", "low_rank_change", "with_diffusers_aliases",
           "file_record", "file_sha256", "generation_record",
           "NotSafetensorsError", "check_safetensors", "load_safetensors", "model_file_problem", "read_header"]
