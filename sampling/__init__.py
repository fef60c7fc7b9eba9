"""FineXtract sampling, host-agnostic: the noise combinations of paper §4.1–4.2 and the N-image
driver. Plain torch; nothing here imports ComfyUI."""
from .guidance import (METHODS, cfg, combine, direct, guided_denoised, k_correction_denoised,
                       model_guidance, model_guidance_uncond)
from .prediction import denoised_from_eps, eps_from_denoised, eps_from_prediction
from .driver import PerImageNoise, derive_seed, generate, image_noise, shard_indices

__all__ = [
    "METHODS", "cfg", "combine", "direct", "guided_denoised", "k_correction_denoised", "model_guidance", "model_guidance_uncond",
    "denoised_from_eps", "eps_from_denoised", "eps_from_prediction",
    "PerImageNoise", "derive_seed", "generate", "image_noise", "shard_indices",
]
