"""What a model file is, host-agnostic: its provenance (sha256, cached) and the key spellings a
LoRA file may use. Plain Python; nothing here imports ComfyUI."""
from .lora_keys import MIN_APPLIED_FRACTION, applied_tensors, with_diffusers_aliases
from .provenance import file_record, file_sha256, generation_record

__all__ = ["MIN_APPLIED_FRACTION", "applied_tensors", "with_diffusers_aliases",
           "file_record", "file_sha256", "generation_record"]
