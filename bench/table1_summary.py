"""What the Table 1 run's units add up to: means over sets, paired intervals, claims, adaptive N.

Pure functions of the units' JSON (:mod:`.table1` writes one per (regime, set, kind) and one per
set's base control), so the summary, the README section and a re-analysis all read the same
numbers. A set's sampling seeds share its fine-tune and are averaged within the set before any
mean or interval over sets (:mod:`.intervals`).
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from .intervals import paired_comparison
from .regime import PARTIAL_BAND

METHODS = ("direct", "cfg", "finextract")
METRICS = ("AS", "A-ESR@0.6", "A-ESR@0.7")
PAIRS = (("finextract", "cfg"), ("cfg", "direct"))
"""The paper's Table 1 orderings: FineXtract beats CFG, CFG beats Direct."""
NAMES = {"direct": "Direct", "cfg": "CFG", "finextract": "FineXtract"}


def _seed_mean(unit: dict, method: str, metric: str) -> float:
    return float(np.mean([runs[method][metric] for runs in unit["seeds"].values()]))


def _by(units: dict, regime: str) -> dict[str, dict[str, dict]]:
    """{kind: {set: unit}} of one regime."""
    out: dict[str, dict[str, dict]] = defaultdict(dict)
    for unit in units.values():
        if unit["unit"]["regime"] == regime:
            out[unit["unit"]["kind"]][unit["unit"]["set"]] = unit
    return dict(out)


def table(units: dict, regime: str) -> dict:
    """{kind: {method: {metric: mean over sets, metric_sd: sd over sets}, "sets": [...]}}."""
    out = {}
    for kind, by_set in _by(units, regime).items():
        block = {"sets": sorted(by_set)}
        for method in METHODS:
            if not all(method in next(iter(u["seeds"].values())) for u in by_set.values()):
                continue
            for metric in METRICS:
                vals = [_seed_mean(u, method, metric) for u in by_set.values()]
                block.setdefault(method, {})[metric] = float(np.mean(vals))
                block[method][metric + "_sd"] = float(np.std(vals))
        out[kind] = block
    return out


def paired(units: dict, regime: str = "partial") -> dict:
    """{kind: {"a-b": {metric: :func:`.intervals.paired_comparison`}}} for the :data:`PAIRS`."""
    out = {}
    for kind, by_set in _by(units, regime).items():
        out[kind] = {f"{a}-{b}": {metric: paired_comparison(
            {s: [{a: r[a][metric], b: r[b][metric]} for r in u["seeds"].values()] for s, u in by_set.items()}, a, b)
            for metric in METRICS} for a, b in PAIRS}
    return out


def claims(paired_block: dict) -> list[dict]:
    """One line per paper claim (ordering × kind × metric) with its interval and verdict."""
    rows = []
    for kind, pairs in paired_block.items():
        for a, b in PAIRS:
            for metric, c in pairs[f"{a}-{b}"].items():
                rows.append({"claim": f"{NAMES[a]} > {NAMES[b]}", "kind": kind, "metric": metric,
                             **{k: c[k] for k in ("mean", "lo", "hi", "sets", "sets_favouring", "verdict")}})
    return rows


def regime_check(units: dict) -> dict:
    """Direct's A-ESR@0.6 per regime and kind (mean over sets and seeds), and for the partial
    regime whether it lies in the band the lengths were chosen for."""
    out = {}
    for regime in sorted({u["unit"]["regime"] for u in units.values()} - {"control"}):
        out[regime] = {}
        for kind, by_set in _by(units, regime).items():
            per_set = {s: _seed_mean(u, "direct", "A-ESR@0.6") for s, u in sorted(by_set.items())}
            mean = float(np.mean(list(per_set.values())))
            out[regime][kind] = {"direct_A-ESR@0.6": mean, "per_set": per_set, "steps": next(iter(by_set.values()))["steps"]}
            if regime == "partial":
                out[regime][kind]["inside_band"] = bool(PARTIAL_BAND[0] <= mean <= PARTIAL_BAND[1])
    return out


def control(units: dict) -> dict:
    """The base model with each set's caption (Direct): the score of "nothing leaked"."""
    runs = [r["direct"] for u in units.values() if u["unit"]["regime"] == "control" for r in u["seeds"].values()]
    if not runs:
        return {}
    return {**{m: float(np.mean([r[m] for r in runs])) for m in METRICS},
            "max_best_score": float(max(max(r["best_score"]) for r in runs)), "runs": len(runs)}


def adaptive(units: dict) -> dict:
    """Every run's adaptive-N stop against its fixed N: {rule: {"regime kind": figures}}, each
    figure a mean over the group's runs (sets × seeds × methods)."""
    groups: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for unit in units.values():
        group = f"{unit['unit']['regime']} {unit['unit']['kind']}"
        for runs in unit["seeds"].values():
            for run in runs.values():
                for rule, stop in run["adaptive"].items():
                    groups[rule][group].append((run, stop))
    out = {}
    for rule, by_group in groups.items():
        out[rule] = {}
        for group, pairs in sorted(by_group.items()):
            fixed = {m: float(np.mean([r[m] for r, _ in pairs])) for m in METRICS}
            at_stop = {m: float(np.mean([s[m] for _, s in pairs])) for m in METRICS}
            out[rule][group] = {
                "runs": len(pairs), "stopped": int(sum(s["stopped"] for _, s in pairs)),
                "mean_n": float(np.mean([s["n"] for _, s in pairs])), "saved": float(np.mean([s["saved"] for _, s in pairs])),
                "fixed": fixed, "at_stop": at_stop,
                "runs_lower_A-ESR@0.6": int(sum(s["A-ESR@0.6"] < r["A-ESR@0.6"] for r, s in pairs)),
                "runs_lower_A-ESR@0.7": int(sum(s["A-ESR@0.7"] < r["A-ESR@0.7"] for r, s in pairs))}
    return out


def vs_n(units: dict, regime: str = "partial") -> dict:
    """Fig. 4b: {kind: {method: {metric: {N/N0: mean over sets}}}} from the runs' re-clustered prefixes."""
    out = {}
    for kind, by_set in _by(units, regime).items():
        out[kind] = {}
        for method in METHODS:
            runs = [r[method] for u in by_set.values() for r in u["seeds"].values() if method in r]
            if not runs:
                continue
            points = runs[0]["vs_n"]
            out[kind][method] = {metric: {p: float(np.mean([r["vs_n"][p][metric] for r in runs])) for p in points}
                                 for metric in METRICS}
    return out


def extras(units: dict) -> dict:
    """Table 4, Fig. 6 and fast vs faithful clustering over the sets that ran them (means of AS and
    A-ESR@0.6, and how many sets each defence reduced)."""
    with_extras = [u["extras"] for u in units.values() if "extras" in u]
    if not with_extras:
        return {}

    def mean(key: str) -> dict:
        return {x: {m: float(np.mean([e[key][x][m] for e in with_extras])) for m in METRICS}
                for x in with_extras[0][key]}
    defences = mean("defences")
    return {"sets": sorted(u["unit"]["set"] for u in units.values() if "extras" in u),
            "defences": defences,
            "defence_reduced_A-ESR@0.6": {d: int(sum(e["defences"][d]["A-ESR@0.6"] < e["defences"]["none"]["A-ESR@0.6"]
                                                     for e in with_extras)) for d in defences if d != "none"},
            "w_sweep": mean("w_sweep"), "k_sweep": mean("k_sweep"),
            "fast_vs_faithful": mean("fast_vs_faithful"),
            "samplers": {key: {m: float(np.mean([e["samplers"][key][m] for e in with_extras]))
                               for m in with_extras[0]["samplers"][key]} for key in with_extras[0]["samplers"]},
            "faithful_capped_thresholds": int(sum(e["faithful_capped_thresholds"] for e in with_extras))}


def summarise(units: dict) -> dict:
    """Everything the README section and the printout show."""
    pairs = paired(units)
    return {"regime_check": regime_check(units), "control": control(units),
            "table": {r: table(units, r) for r in ("partial", "absent", "saturated")
                      if any(u["unit"]["regime"] == r for u in units.values())},
            "paired": pairs, "claims": claims(pairs), "adaptive": adaptive(units), "vs_n": vs_n(units),
            "extras": extras(units)}
