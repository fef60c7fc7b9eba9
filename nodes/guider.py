"""FineXtract's model guidance as a ComfyUI GUIDER (for SamplerCustomAdvanced).

The guider evaluates the fine-tuned model on the caption and, per method, the base model (finextract,
Eq. 13) or the fine-tuned model (cfg, Eq. 8) on the negative/empty prompt, or nothing (direct),
and combines the x0 predictions through ComfyUI's own ``cfg_function`` (CFG at scale 1 / w / w′,
with its sampler_cfg and post-CFG hooks) plus Eq. 13's k term, :func:`..sampling.k_correction_denoised`
(eps-space maths, x_t = a x0 + b eps with a read from the model's own ``noise_scaling``, so EPS, V
and flow families all work; :func:`..sampling.guided_denoised` is the same combination in plain torch).

How the two models are evaluated (the cost question):
- base + LoRA pair (the fine-tuned MODEL is the base MODEL plus weight patches): ONE batched
  forward of the base weights per step, the LoRA applied as a masked side branch to the caption rows
  only (:mod:`..sampling.lora_branch`): CFG's cost, no second copy of the weights, no re-patching;
- two full checkpoints: both UNets are loaded (ComfyUI's additional models) and each is run on its
  half of the batch; that holds two UNets, inherently.
"""
from __future__ import annotations

import torch

import comfy.patcher_extension
import comfy.samplers
from comfy_api.v0_0_2 import io

from . import schema
from ..sampling import METHODS, k_correction_denoised
from .lora_branch import FineTuneBranch, extra_patches

def model_inputs() -> list:
    """The four sockets every guidance node takes (guider, all-in-one sampler)."""
    return [
        io.Model.Input("base", tooltip="The pretrained (base) model, from FineXtract Dual Model Loader."),
        io.Model.Input("finetuned", tooltip="The fine-tuned model under audit (full checkpoint or base + LoRA)."),
        io.Conditioning.Input("positive", tooltip="The training caption (or a recovered one), encoded with the fine-tuned CLIP."),
        io.Conditioning.Input("negative", tooltip=(
            "The empty prompt; for finextract encode it with the base CLIP. FLUX.1-dev: give it "
            "FluxGuidance at the caption's value (ComfyUI uses 3.5 when absent): the distilled model's "
            "unconditional estimate (docs/guidance.md).")),
    ]


def method_inputs() -> list:
    """method, w', k: the guidance widgets of every guidance node (guider, all-in-one sampler)."""
    return [
        io.Combo.Input("method", options=list(METHODS), default="finextract", tooltip=METHOD_TOOLTIP),
        io.Float.Input("w", default=3.0, min=0.0, max=30.0, step=0.1, tooltip=W_TOOLTIP),
        io.Float.Input("k", default=-0.02, min=-1.0, max=1.0, step=0.005, tooltip=K_TOOLTIP),
    ]


W_TOOLTIP = ("w': guidance scale (paper default 3.0 for a full fine-tune; 5.0 is the paper's "
             "default for LoRA fine-tunes of SD1.x/SDXL; 3.0 for FLUX.1-dev LoRAs, paper App. H). "
             "The paper tunes it per model (Table 3): the bundled miniature model wants 2.0 "
             "(measured; 5.0 loses to the direct baseline there, README)")
K_TOOLTIP = "k: correction on the base model's unconditional noise (Eq. 13; paper default -0.02)"
METHOD_TOOLTIP = ("finextract: model guidance, fine-tuned model on the caption vs the base model on "
                  "the empty prompt (Eq. 13); cfg: classifier-free guidance on the fine-tuned model "
                  "(Eq. 8, baseline); direct: the fine-tuned model on the caption alone (baseline)")


def signal_scale(model_sampling, sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """a of x_t = a x0 + b eps at ``sigma``, read from the family's own noise_scaling."""
    ones = torch.ones((x.shape[0],) + (1,) * (x.ndim - 1), device=x.device, dtype=x.dtype)
    return model_sampling.noise_scaling(sigma, torch.zeros_like(ones), ones)


class ModelGuidanceGuider(comfy.samplers.CFGGuider):
    def __init__(self, base, finetuned, method: str, w: float, k: float):
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
        self.method, self.w, self.k = method, w, k
        self.branch, self.base = None, None
        if method != "finextract":
            main = finetuned.clone()
        elif finetuned.is_clone(base):
            patches = extra_patches(base, finetuned)
            if not patches:
                raise ValueError("the fine-tuned model is the base model itself: model guidance "
                                 "between identical models extracts nothing")
            main = base.clone()
            self.branch = FineTuneBranch(patches, ft_flag=0)
            main.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, "finextract",
                                      self.branch.route)
        else:
            main = finetuned.clone()
            main.set_additional_models("finextract_base", [base])
            self.base = base
        super().__init__(main)
        self.cfg = w  # what pre/post-CFG hooks read as cond_scale

    def set_conds(self, positive, negative):
        self.inner_set_conds({"positive": positive, "negative": negative})

    def outer_sample(self, *args, **kwargs):
        if self.branch is not None:
            with self.branch.installed(self.model_patcher.model):
                return super().outer_sample(*args, **kwargs)
        if self.base is not None:  # the second UNet runs too: give it its patcher state
            self.base.pre_run()
            try:
                return super().outer_sample(*args, **kwargs)
            finally:
                self.base.cleanup()
        return super().outer_sample(*args, **kwargs)

    def predict_noise(self, x, timestep, model_options={}, seed=None):
        positive, negative = self.conds.get("positive"), self.conds.get("negative")
        conds = [positive] if self.method == "direct" else [positive, negative]
        if self.base is None:
            out = comfy.samplers.calc_cond_batch(self.inner_model, conds, x, timestep, model_options)
        else:  # two full UNets: each model on its own half
            out = (comfy.samplers.calc_cond_batch(self.inner_model, [positive], x, timestep, model_options)
                   + comfy.samplers.calc_cond_batch(self.base.model, [negative], x, timestep, model_options))
        # pre-CFG hooks as sampling_function runs them (it is bypassed: it knows one model only)
        for fn in model_options.get("sampler_pre_cfg_function", []):
            out = fn({"conds": conds, "conds_out": out, "cond_scale": self.w, "timestep": timestep,
                      "input": x, "sigma": timestep, "model": self.inner_model, "model_options": model_options})
        cond = out[0]
        uncond = out[1] if len(out) > 1 else cond
        # ComfyUI's own CFG step (sampler_cfg_function, post-CFG hooks), as Guider_DualCFG uses it:
        # direct is CFG at scale 1 on the caption; cfg is Eq. 8; model guidance is CFG at scale w'
        # between the fine-tuned caption and the base's empty prompt, plus its k term (Eq. 13).
        scale = 1.0 if self.method == "direct" else self.w
        guided = comfy.samplers.cfg_function(self.inner_model, cond, uncond, scale, x, timestep,
                                             model_options=model_options, cond=positive,
                                             uncond=negative if self.method != "direct" else None)
        if self.method != "finextract" or self.k == 0.0:
            return guided
        a = signal_scale(self.inner_model.model_sampling, timestep, x)
        return guided + k_correction_denoised(x, a, uncond, self.k)


class FineXtractGuider(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema(
            node_id="FineXtractGuider", display_name="FineXtract Model Guidance Guider",
            category="finextract",
            description=("Model guidance (FineXtract, ICML 2025, Eq. 13) as a GUIDER for "
                         "SamplerCustomAdvanced: steers sampling towards where the fine-tuned model "
                         "departs from its base, to surface the fine-tune's training images. The "
                         "CFG and direct baselines are the same node with another method."),
            search_aliases=["model guidance", "finextract", "extraction guider", "leakage audit"],
            inputs=[*model_inputs(), *method_inputs()],
            outputs=[io.Guider.Output()],
        )

    @classmethod
    def execute(cls, base, finetuned, positive, negative, method, w, k) -> io.NodeOutput:
        guider = ModelGuidanceGuider(base, finetuned, method, w, k)
        guider.set_conds(positive, negative)
        return io.NodeOutput(guider)


NODES = [FineXtractGuider]
