"""The demo path end to end (the slower test, ~1–3 min on 2 shared cores): bundled base + bundled
LoRA → FineXtract → SSCD → clustering → metrics → report folder, with a small N."""
import json

import torch

from finextract.miniature.demo import run_demo

torch.set_num_threads(1)


def test_demo_extracts_images_closer_to_the_training_set_than_the_base_model(tmp_path):
    report = run_demo(tmp_path, n=40, steps=10)
    [path] = tmp_path.glob("finextract_report_*.json")
    on_disk = json.loads(path.read_text())
    assert on_disk["metrics"]["raw"]["AS"] == report["metrics"]["raw"]["AS"]
    assert len(list((tmp_path / "extracted").glob("*.png"))) == report["provenance"]["n0"]
    assert (tmp_path / "grid.png").stat().st_size > 0 and (tmp_path / "pairs.png").stat().st_size > 0
    fx = report["metrics"]["raw"]["AS"]
    control = report["provenance"]["base_model_control"]["metrics"]["AS"]
    assert fx > control + 0.05, (fx, control)
