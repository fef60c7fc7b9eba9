"""The fine-tunes the paper's comparisons run on: this world's recipe, and how long for each kind.

The paper's comparisons live where fine-tunes *partially* memorise: Direct sampling recovers some
but not all training images (issue 14: Direct A-ESR@0.6 between 0.1 and 0.6). Where that is
depends on the fine-tune kind and on the base, so it is read off the calibration curves
(``python -m finextract.bench.calibration curve``, README "Calibration and bars") and written in
ONE place, :data:`LENGTHS`, before any method runs; plus one length where memorisation is absent
and one where it is saturated, to show the ends. When the base changes, re-measure the curves
and change the numbers here (each says which measurement it comes from); the Table 1 run prints
the table it used and checks it after the fact (Direct's A-ESR@0.6 per kind, against the band).

Recipe (:data:`RECIPE`): the paper's batch-1 constant-lr DreamBooth does not memorise in this world
(README: full fine-tune, lr 2e-4, 2,000 steps: best Direct SSCD 0.11), so every kind uses the one
that does — batch 5 (the whole set), lr 5e-4 cosine to 5 %, half the timesteps below 300 — the
recipe of the calibration curves and of the demo LoRA (:data:`finetune.DEMO_LORA`). A fine-tune of
S steps has its cosine horizon at S, so the lengths below come from calibration points whose
horizon was their own length wherever one was measured.
"""
from __future__ import annotations

import numpy as np

from ..miniature import finetune
from ..miniature.model import MiniPipeline

KINDS = ("full", "lora", "two-stage")
REGIMES = ("partial", "absent", "saturated")
PARTIAL_BAND = (0.1, 0.6)
"""Direct A-ESR@0.6 of the partial regime (issue 14)."""

RECIPE = {k: finetune.DEMO_LORA[k] for k in ("batch", "low_t_fraction", "lr_floor")}
LR = finetune.DEMO_LORA["lr"]
"""5e-4 for every kind: the full-fine-tune and LoRA calibration curves both ran at it."""
LORA = {k: finetune.DEMO_LORA[k] for k in ("rank", "targets")}
INVERSION = {"steps": 200, "lr": 5e-3}
"""Two-stage's first stage (textual inversion of the trigger): short, at
:func:`finetune.two_stage`'s default lr; the second stage is a full fine-tune of the kind's length."""

LENGTHS: dict[str, dict[str, int]] = {
    # Measured on the second (patch-2) base, 2026-12-01: Direct sampling, N = 250, 20 DDIM steps.
    "partial": {
        # README "Full fine-tune" (dog, horizon 8,000): Direct A-ESR@0.6 0.2 at 1,000 steps, 0.8 at
        # 2,000. A fine-tune whose horizon is its own length decays its lr sooner (measured on the
        # LoRA: 1,000 steps at horizon 1,000 gave AS 0.305, at horizon 6,000 0.374), so 1,500 —
        # not measured itself; the run's regime check says where it landed.
        "full": 1500,
        # README "LoRA" (cat, each LoRA's horizon its own length): 1,500 steps Direct A-ESR@0.6 0.2
        # (AS 0.503); 2,000 steps 0.6 (the shipped demo LoRA, the band's upper edge); 1,000 steps 0.0.
        "lora": 1500,
        # No two-stage curve has been measured (``calibration curve --kinds two-stage`` does it).
        # Stage 2 is a full fine-tune started from an inverted trigger, so a little shorter than
        # the full kind's partial length.
        "two-stage": 1000,
    },
    "absent": {
        # Not measured on this base: the full curve's first point (1,000 steps) already had AS
        # 0.492; the first base's 250-step full fine-tune had AS 0.035.
        "full": 250,
        # LoRA at 1,000 steps (horizon 1,000): AS 0.305, best 0.46, nothing above 0.6 — not yet
        # absent; 500 is unmeasured.
        "lora": 500,
        # The full kind's absent length (unmeasured for two-stage).
        "two-stage": 250,
    },
    "saturated": {
        # README "Full fine-tune" (dog, horizon 8,000): 4,000 steps, AS 0.855, A-ESR@0.6 and @0.7 1.0.
        "full": 4000,
        # README "LoRA" (cat, horizon 6,000): 4,000 steps, AS 0.785, A-ESR@0.6 and @0.7 1.0.
        "lora": 4000,
        # The full kind's saturated length (unmeasured for two-stage).
        "two-stage": 4000,
    },
}

W_FINEXTRACT = {"full": 3.0, "lora": 5.0, "two-stage": 3.0}
"""The paper's w′ defaults (Sec. 5.1): 3 for a fine-tune of the whole UNet, 5 for a LoRA."""
CFG_SCALE = {"full": 3.0, "lora": 3.0, "two-stage": 3.0}
"""CFG's scale as the paper compares it (Sec. 5.1: "For LoRA, w' is set to 5.0 for FineXtract and
3.0 for CFG"; 3.0 for both under DreamBooth)."""
K = -0.02


def trigger(caption: str) -> str:
    """The rare token of a concept caption "a photo of <trigger> <noun>"."""
    return caption.split()[-2]


def fine_tune(base: MiniPipeline, kind: str, images: np.ndarray, caption: str, steps: int, seed: int = 0,
              augment: finetune.Augment | None = None, inversion_steps: int = INVERSION["steps"]) -> MiniPipeline:
    """One fine-tune of ``kind`` with this world's recipe; ``steps`` = the (second-stage) length."""
    if kind == "full":
        return finetune.dreambooth(base, images, caption, steps, lr=LR, seed=seed, augment=augment, **RECIPE)
    if kind == "lora":
        tensors = finetune.train_lora(base, images, caption, steps, rank=LORA["rank"], alpha=float(LORA["rank"]),
                                      lr=LR, seed=seed, augment=augment, targets=LORA["targets"], **RECIPE)
        return finetune.with_unet(base, finetune.merge_lora(base.unet, tensors))
    if kind == "two-stage":
        return finetune.two_stage(base, images, caption, trigger(caption), inversion_steps, INVERSION["lr"], steps,
                                  lr=LR, seed=seed, augment=augment, **RECIPE)
    raise ValueError(f"unknown fine-tune kind {kind!r}; expected one of {KINDS}")


def describe(lengths: dict[str, dict[str, int]], inversion_steps: int = INVERSION["steps"]) -> str:
    """The regime table as the run prints it."""
    rows = [f"fine-tunes: batch {RECIPE['batch']}, lr {LR:g} cosine to {RECIPE['lr_floor']:.0%}, "
            f"{RECIPE['low_t_fraction']:.0%} of timesteps below 300; LoRA rank {LORA['rank']} ({LORA['targets']}); "
            f"two-stage = {inversion_steps} inversion steps (lr {INVERSION['lr']:g}) + the length below"]
    for regime, by_kind in lengths.items():
        rows.append(f"  {regime:9s} " + "  ".join(f"{kind} {steps} steps" for kind, steps in by_kind.items()))
    return "\n".join(rows)
