"""The Table 1 benchmark's summaries (pure functions on a hand-made result; no model runs)."""
from finextract.bench.table1 import summarise


def _scores(as_):
    return {"AS": as_, "A-ESR@0.6": float(as_ > 0.6), "A-ESR@0.7": float(as_ > 0.7)}


def _set(fx_full, vs_n, defences, faithful):
    methods = {"direct": _scores(0.2), "cfg": _scores(0.3), "finextract": _scores(fx_full)}
    return {"base_control": _scores(0.1), "full": methods, "lora": dict(methods),
            "vs_n": {m: _scores(v) for m, v in vs_n.items()}, "faithful": {**_scores(faithful), "capped_thresholds": 0},
            "defences": {"none": _scores(fx_full), **{d: _scores(v) for d, v in defences.items()}},
            "w_sweep": {"1.0": _scores(0.2), "3.0": _scores(0.4)}, "k_sweep": {"0.0": _scores(0.3)}}


def test_extras_summary_means_pairs_and_flags():
    per_set = {"a": _set(0.5, {"1": 0.3, "5": 0.5}, {"cutout": 0.4, "randaugment": 0.6}, 0.45),
               "b": _set(0.7, {"1": 0.5, "5": 0.7}, {"cutout": 0.5, "randaugment": 0.5}, 0.75)}
    x = summarise(per_set)["extras"]
    assert x["vs_n"]["AS"] == {"1": 0.4, "5": 0.6} and x["vs_n"]["A-ESR@0.6"] == {"1": 0.0, "5": 0.5}
    assert x["more_generations_do_not_hurt"]
    assert x["fast_vs_faithful_AS"] == {"fast": 0.6, "faithful": 0.6} and x["faithful_capped_thresholds"] == 0
    assert x["defence_reduced_AS"] == {"cutout": {"sets": 2, "sets_reduced": 2},
                                       "randaugment": {"sets": 2, "sets_reduced": 1}}
    assert x["w_sweep"] == {"1.0": 0.2, "3.0": 0.4}
    per_set["b"]["faithful"]["capped_thresholds"] = 3
    assert summarise(per_set)["extras"]["faithful_capped_thresholds"] == 3
    per_set["a"]["vs_n"]["5"] = _scores(0.0)  # mean AS 0.40 at N0, 0.35 at 5·N0: more generations hurt
    assert not summarise(per_set)["extras"]["more_generations_do_not_hurt"]


def test_main_table_only_has_no_extras():
    per_set = {"a": _set(0.5, {}, {}, 0.5)}
    for key in ("vs_n", "faithful", "defences", "w_sweep", "k_sweep"):
        del per_set["a"][key]
    summary = summarise(per_set)
    assert "extras" not in summary and summary["full"]["paired"]["finextract>cfg"]["sets_won"] == 1
