"""The audit command's plumbing that needs no ComfyUI: shard ranges, the summary and its exit
verdict (manifests and every input check: test_cli_audit_inputs.py). The full command runs against
a real ComfyUI in tests/host/test_cli_audit.py."""
from finextract.cli.audit import summary_rows, write_summary
from finextract.cli.shards import contiguous_runs, generation_indices


def test_contiguous_runs_cover_exactly_the_indices():
    assert contiguous_runs([0, 1, 2, 5, 6, 9]) == [(0, 3), (5, 2), (9, 1)]
    assert contiguous_runs(generation_indices(10, None)) == [(0, 10)]
    shard = generation_indices(10, (1, 3))
    assert shard == [1, 4, 7]
    assert [i for s, c in contiguous_runs(shard) for i in range(s, s + c)] == shard


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
