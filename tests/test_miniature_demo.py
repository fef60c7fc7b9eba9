"""The demo path end to end (the slower test, ~1–2 min on 2 shared cores): bundled base + bundled
LoRA → FineXtract → SSCD → clustering → metrics → report folder, with a small N. It must recover a
real copy of a training image — not merely score above the base model."""
import json

import torch

from finextract.miniature.demo import run_demo

torch.set_num_threads(1)


def test_demo_recovers_a_training_image(tmp_path):
    report = run_demo(tmp_path, n=30, direct=False)
    [path] = tmp_path.glob("finextract_report_*.json")
    on_disk = json.loads(path.read_text())
    raw = report["metrics"]["raw"]
    assert on_disk["metrics"]["raw"]["AS"] == raw["AS"]
    assert len(list((tmp_path / "extracted").glob("*.png"))) == report["provenance"]["n0"]
    assert (tmp_path / "grid.png").stat().st_size > 0 and (tmp_path / "pairs.png").stat().st_size > 0
    assert max(raw["best_score"]) > 0.6, raw["best_score"]  # a copy, by the paper's τ
    control = report["provenance"]["comparisons"]["base-model control"]["metrics"]
    assert max(control["best_score"]) < 0.5 and raw["AS"] > control["AS"] + 0.2, (raw["AS"], control["AS"])
