"""Smoke test of the whole Table 1 bench at a tiny size: real fine-tunes (a few steps), real sampling,
SSCD and clustering, through ``main(argv)``; then the resume and the README writer on its JSON."""
import json
import re
import shutil

import pytest

from finextract.bench import table1, table1_readme
from finextract.bench.table1_summary import METHODS, METRICS

ARGV = ["--sets", "coffee", "--kinds", "full,two-stage", "--seeds", "0,1", "--n-per-image", "1", "--ddim-steps", "1",
        "--length-scale", "0.001", "--inversion-steps", "1", "--ends-sets", "--extras-sets", "coffee",
        "--w-sweep", "3", "--k-sweep=-0.02,0", "--faithful-cap", "1", "--samplers", "ddim:1,dpmpp_2m:2"]


def test_tiny_run_json_resume_and_readme(tmp_path, capsys):
    out = tmp_path / "t1"
    table1.main(ARGV + ["--out", str(out)])
    printed = capsys.readouterr().out
    assert "sampling seeds [0, 1] share one fine-tune per (set, kind)" in printed
    assert "partial   full 2 steps  lora 2 steps  two-stage 1 steps" in printed  # the scaled regime table
    result = json.loads((out / "table1.json").read_text())
    assert set(result) >= {"command", "date", "machine", "config", "regime", "stop_rules", "summary", "units"}
    assert sorted(result["units"]) == ["control_coffee_base", "partial_coffee_full", "partial_coffee_two-stage"]
    unit = result["units"]["partial_coffee_two-stage"]
    assert unit["steps"] == 1 and sorted(unit["seeds"]) == ["0", "1"] and "extras" not in unit
    for runs in unit["seeds"].values():
        assert sorted(runs) == sorted(METHODS)
        run = runs["finextract"]
        assert set(METRICS) <= set(run) and len(run["best_score"]) == 5 and (run["w"], run["k"]) == (3.0, -0.02)
        assert set(run["vs_n"]) == {"1"} and set(run["adaptive"]) == set(table1.STOP_RULES)
        assert run["adaptive"]["default"]["n"] == 5 and not run["adaptive"]["default"]["stopped"]
    unit_full = result["units"]["partial_coffee_full"]
    extras = unit_full["extras"]
    assert set(extras["defences"]) == {"none", "cutout", "randaugment"} and set(extras["k_sweep"]) == {"-0.02", "0.0"}
    assert extras["samplers"]["ddim:1"]["AS"] == unit_full["seeds"]["0"]["finextract"]["AS"]  # the main run, reused
    assert extras["samplers"]["dpmpp_2m:2"]["evals_per_audit"] == 2 * 2 * 5
    s = result["summary"]
    assert len(s["claims"]) == 2 * 2 * 3 and {c["verdict"] for c in s["claims"]} == {"too few sets"}  # one set
    assert set(s["table"]) == {"partial"} and set(s["table"]["partial"]) == {"full", "two-stage"}
    assert set(s["regime_check"]["partial"]["full"]) >= {"direct_A-ESR@0.6", "inside_band"}
    assert s["adaptive"]["default"]["partial full"]["runs"] == 2 * 3 and s["extras"]["sets"] == ["coffee"]

    # rerun: every unit is skipped; other settings are refused, naming what differs
    table1.main(ARGV + ["--out", str(out)])
    assert "3 units: 3 already done (skipped), 0 to run" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="ddim_steps 1 saved, 2 now"):
        table1.main([a if a != "1" or ARGV[i - 1] != "--ddim-steps" else "2" for i, a in enumerate(ARGV)]
                    + ["--out", str(out)])

    # the README writer rewrites only its section, from the JSON
    readme = tmp_path / "README.md"
    shutil.copy(table1_readme.README, readme)
    before = readme.read_text()
    table1.main(["--readme", str(out / "table1.json"), "--readme-path", str(readme)])
    after = readme.read_text()
    head, tail = before.split(table1_readme.BEGIN)[0], before.split(table1_readme.END)[1]
    assert after.startswith(head) and after.endswith(tail) and after != before
    section = after.split(table1_readme.BEGIN)[1].split(table1_readme.END)[0]
    assert result["command"] in section and result["machine"] in section
    claim_rows = re.findall(r"^\| (FineXtract > CFG|CFG > Direct) \|.*\*\*too few sets\*\* \|$",
                            section, re.M)
    assert len(claim_rows) == 12
    assert "**Adaptive N (ours)**" in section and "Table 4" in section and "| dpmpp_2m:2 | 20 |" in section
    # the guidance each kind ran with, from the run's JSON (the paper: CFG 3 beside FineXtract's 5 for a LoRA)
    assert "w′ 3 full, 5 lora, 3 two-stage; CFG scale 3 full, 3 lora, 3 two-stage" in section
