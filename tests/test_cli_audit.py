"""The audit command's plumbing that needs no ComfyUI: manifests, shard ranges, the summary and
its exit verdict. The full command runs against a real ComfyUI in tests/host/test_cli_audit.py."""
import pytest

from finextract.cli.audit import build_parser, specs_from, summary_rows, write_summary
from finextract.cli.shards import contiguous_runs, generation_indices


def test_contiguous_runs_cover_exactly_the_indices():
    assert contiguous_runs([0, 1, 2, 5, 6, 9]) == [(0, 3), (5, 2), (9, 1)]
    assert contiguous_runs(generation_indices(10, None)) == [(0, 10)]
    shard = generation_indices(10, (1, 3))
    assert shard == [1, 4, 7]
    assert [i for s, c in contiguous_runs(shard) for i in range(s, s + c)] == shard


def test_manifest_rows_become_models(tmp_path):
    (tmp_path / "m.csv").write_text(
        "name,base,finetuned,lora,train,caption\n"
        "dog,base.safetensors,,dog.safetensors:0.8;style.safetensors,imgs/dog,a photo of sks dog\n"
        "db,base.safetensors,db.safetensors,,imgs/db,\n")
    args = build_parser().parse_args(["--comfyui", "x", "--manifest", str(tmp_path / "m.csv"), "--out", "o"])
    dog, db = specs_from(args)
    assert dog.loras == [(tmp_path / "dog.safetensors", 0.8), (tmp_path / "style.safetensors", 1.0)]
    assert dog.train == tmp_path / "imgs/dog" and dog.caption == "a photo of sks dog"
    assert db.finetuned == tmp_path / "db.safetensors" and db.loras == []
    (tmp_path / "imgs/dog").mkdir(parents=True)
    with pytest.raises(SystemExit, match="no images"):
        dog.training_images()


def test_a_model_needs_exactly_one_kind_of_fine_tune(tmp_path):
    (tmp_path / "m.csv").write_text("name,base,finetuned,lora,train,caption\n"
                                    "x,b.safetensors,f.safetensors,l.safetensors,t,\n")
    with pytest.raises(SystemExit, match="exactly one"):
        specs_from(build_parser().parse_args(
            ["--comfyui", "x", "--manifest", str(tmp_path / "m.csv"), "--out", "o"]))


def test_summary_flags_models_above_the_threshold(tmp_path):
    results = [{"name": "a", "n0": 5, "n": 250, "report": "a/report.json",
                "metrics": {"AS": 0.71234, "A-ESR": {"0.6": 0.4, "0.7": 0.2}}},
               {"name": "b", "n0": 5, "n": 250, "report": "b/report.json",
                "metrics": {"AS": 0.3, "A-ESR": {"0.6": 0.0, "0.7": 0.0}}}]
    rows = summary_rows(results, 0.6, 0.0)
    assert [(r["model"], r["as"], r["a_esr@0.6"], r["verdict"]) for r in rows] == [
        ("a", 0.7123, 0.4, "LEAKS"), ("b", 0.3, 0.0, "ok")]
    assert [r["verdict"] for r in summary_rows(results, 0.6, 0.5)] == ["ok", "ok"]
    table = write_summary(tmp_path, rows)
    assert "| a | 5 | 250 | 0.7123 | 0.4 | LEAKS |" in table
    assert (tmp_path / "summary.csv").read_text().splitlines()[0] == "model,n0,n,as,a_esr@0.6,verdict,report"
