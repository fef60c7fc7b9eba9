"""Benchmark of the clustering step (paper §4.3): ``python -m finextract.bench.clustering``.

Prints, measured side by side in one run:
1. clustering time for N = 1k, 5k, 10k planted-cluster descriptors (N0 = N / 50, as the paper's
   N = 50·N0), fast vs faithful mode, with the threshold reached, whether a time cap was hit and
   whether the planted clusters were recovered exactly;
2. AS (Eq. 1) of the extracted set against the planted "training" descriptors, fast vs faithful,
   on easy and hard planted data;
3. peak RSS of the bounded-memory latent path (decode in chunks → real ONNX SSCD → cluster) for
   two values of N, each in a forked child, beside what one IMAGE batch of N would take;
4. platform N (N = 50,000 generations of N0 = 1,000 training images), fast mode, in a forked
   child: the same row as (1) with its peak RSS counted from just before clustering (the
   descriptors already loaded), then the neighbour table that dominates it, computed from full
   rows as before (tests/full_rows.py) and from half the matrix (clustering/neighbours.py), side
   by side, with the ratio and whether the two tables are identical.
Times are wall, CPU and user CPU seconds (getrusage) with the load average beside them. On a shared, oversubscribed
machine wall time measures the neighbours, and with 2 threads the CPU time includes OpenMP
spin-waiting; ``--threads 1`` gives the CPU time of the work itself (an upper bound for the wall
time on 2 free cores).
The decoder of (3) is bilinear upsampling of a 4×128×128 latent to a 1024² image (SDXL size): a
stand-in for a VAE with the same contract, since no VAE weights exist outside ComfyUI here.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import time

import numpy as np
import torch

from ..clustering import cluster, extract, load_descriptor
from ..clustering.greedy_peeling import default_neighbours
from ..clustering.neighbours import neighbour_table
from . import test_fixture

_planted = test_fixture("planted")
planted_clusters, planted_partition = _planted.planted_clusters, _planted.planted_partition
full_rows_table = test_fixture("full_rows").full_rows_table


def _as(result, x, centres) -> float:
    extracted = x[result.indices]
    return float((centres @ extracted.T).max(axis=1).mean())


def clustering_times(sizes, faithful_cap: float, noise: float) -> list[dict]:
    rows = []
    for n in sizes:
        n0 = max(1, n // 50)
        x, labels, centres = planted_clusters(n0, n, noise=noise, seed=n)
        truth = planted_partition(labels)
        for mode in ("fast", "faithful"):
            start, cpu = time.perf_counter(), time.process_time()
            r = cluster(x, n0, mode=mode, time_cap=faithful_cap)
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
            rows.append({"N": n, "N0": n0, "mode": mode, "seconds": round(seconds, 2),
                         "cpu_seconds": round(cpu, 2), "load_avg": round(os.getloadavg()[0], 1),
                         "threshold": round(r.threshold, 4), "thresholds_tried": len(r.trials),
                         "time_capped": r.capped_thresholds, "dropped": r.dropped,
                         "exact": sorted(tuple(c) for c in r.clusters) == truth,
                         "AS": round(_as(r, x, centres), 4)})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def as_comparison(faithful_cap: float) -> list[dict]:
    rows = []
    for label, noise, n0, n in (("easy", 0.8, 10, 500), ("hard", 1.2, 10, 500), ("harder", 1.5, 20, 1000)):
        x, _, centres = planted_clusters(n0, n, noise=noise, seed=7)
        row = {"data": label, "noise": noise, "N": n, "N0": n0}
        for mode in ("fast", "faithful"):
            r = cluster(x, n0, mode=mode, time_cap=faithful_cap)
            row[f"AS_{mode}"] = round(_as(r, x, centres), 4)
            row[f"capped_{mode}"] = r.capped_thresholds
        row["fast_minus_faithful"] = round(row["AS_fast"] - row["AS_faithful"], 4)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


LATENT = (4, 128, 128)


def _decode(latents: torch.Tensor) -> torch.Tensor:
    up = torch.nn.functional.interpolate(latents[:, :3], scale_factor=8, mode="bilinear", align_corners=False)
    return torch.sigmoid(up).permute(0, 2, 3, 1).contiguous()


def ram_child(n: int, chunk: int) -> dict:
    """Runs in a fresh process: the latent path for N latents; returns peak RSS figures."""
    sscd = load_descriptor()
    g = torch.Generator().manual_seed(0)
    latents = torch.randn((n, *LATENT), generator=g)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    out = extract(lambda idx: _decode(latents[list(idx)]), n, max(1, n // 50), sscd, chunk_size=chunk)
    chosen = _decode(latents[out.result.indices])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"N": n, "chunk": chunk, "seconds": round(time.perf_counter() - start, 1),
            "rss_before_MiB": round(base), "peak_rss_MiB": round(peak),
            "latents_MiB": round(latents.numel() * 4 / 2**20, 1),
            "descriptors_MiB": round(n * 512 * 4 / 2**20, 2),
            "one_image_batch_MiB": round(n * 1024 * 1024 * 3 * 4 / 2**20),
            "extracted": list(chosen.shape),
            "extracted_MiB": round(chosen.numel() * 4 / 2**20, 1)}


def _forked(work, *args):
    """``work(*args)`` in a forked child (fresh peak-RSS counter, same code as this process)."""
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    proc = context.Process(target=lambda: queue.put(work(*args)))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def peak_ram(ns, chunk: int) -> list[dict]:
    """Each N in a forked child."""
    rows = []
    for n in ns:
        rows.append(_forked(ram_child, n, chunk))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def _timed(work):
    """(result, wall seconds, CPU seconds, user CPU seconds) of ``work()``."""
    wall, cpu, user = time.perf_counter(), time.process_time(), resource.getrusage(resource.RUSAGE_SELF).ru_utime
    result = work()
    return (result, round(time.perf_counter() - wall, 2), round(time.process_time() - cpu, 2),
            round(resource.getrusage(resource.RUSAGE_SELF).ru_utime - user, 2))


def _reset_peak_rss() -> bool:
    """Restart this process's peak-RSS count from its current RSS (Linux: /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _rss_mib() -> int:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def platform_child(n: int, noise: float) -> list[dict]:
    """Runs in a fresh process: fast mode at N, then the two neighbour tables side by side."""
    n0 = max(1, n // 50)
    x, labels, centres = planted_clusters(n0, n, noise=noise, seed=n)
    reset = _reset_peak_rss()
    before = _rss_mib()
    r, seconds, cpu, user = _timed(lambda: cluster(x, n0, mode="fast"))
    row = {"N": n, "N0": n0, "mode": "fast", "seconds": seconds, "cpu_seconds": cpu, "user_cpu_seconds": user,
           "load_avg": round(os.getloadavg()[0], 1), "threshold": round(r.threshold, 4),
           "thresholds_tried": len(r.trials), "time_capped": r.capped_thresholds, "dropped": r.dropped,
           "exact": sorted(tuple(c) for c in r.clusters) == planted_partition(labels),
           "AS": round(_as(r, x, centres), 4), "rss_before_MiB": before,
           ("peak_rss_MiB" if reset else "peak_rss_since_start_MiB"): _rss_mib()}
    k = default_neighbours(n, n0)
    old, old_s, old_cpu, old_user = _timed(lambda: full_rows_table(x, k))
    new, new_s, new_cpu, new_user = _timed(lambda: neighbour_table(x, k))
    table = {"N": n, "k": k, "full_rows_seconds": old_s, "full_rows_user_cpu": old_user,
             "half_matrix_seconds": new_s, "half_matrix_user_cpu": new_user,
             "user_cpu_ratio_new_old": round(new_user / max(old_user, 1e-9), 3),
             "wall_ratio_new_old": round(new_s / max(old_s, 1e-9), 3),
             "identical": bool(np.array_equal(old[0], new[0]) and np.array_equal(old[1], new[1])),
             "load_avg": round(os.getloadavg()[0], 1)}
    return [row, table]


def platform(ns, noise: float) -> list[dict]:
    """Each N in a forked child, like :func:`peak_ram`."""
    rows = []
    for n in ns:
        for row in _forked(platform_child, n, noise):
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1000,5000,10000")
    p.add_argument("--faithful-cap", type=float, default=30.0, help="faithful mode's seconds per threshold")
    p.add_argument("--noise", type=float, default=0.8)
    p.add_argument("--ram", default="100,400", help="the two N of the peak-RAM measurement")
    p.add_argument("--chunk", type=int, default=8)
    p.add_argument("--threads", type=int, default=2, help="torch threads (1: CPU time = work, no spin-wait)")
    p.add_argument("--platform", default="50000", help="the N of section 4 (fast mode and neighbour tables)")
    p.add_argument("--sections", default="1,2,3,4", help="which sections to run")
    args = p.parse_args(argv)
    sections = set(args.sections.split(","))
    torch.set_num_threads(args.threads)
    out = {}
    if "3" in sections:
        print("== 3. peak RAM of the latent path (decode in chunks, real ONNX SSCD), first: small parent")
        out["ram"] = peak_ram([int(s) for s in args.ram.split(",")], args.chunk)
    if "4" in sections:
        print("== 4. platform N, fast mode (forked child, also before the big sections), and its neighbour "
              "table from full rows (as before) vs half the matrix")
        out["platform"] = platform([int(s) for s in args.platform.split(",")], args.noise)
    if "1" in sections:
        print("== 1. clustering time (planted clusters, N0 = N/50)")
        out["times"] = clustering_times([int(s) for s in args.sizes.split(",")], args.faithful_cap, args.noise)
    if "2" in sections:
        print("== 2. AS fast vs faithful (planted clusters)")
        out["as"] = as_comparison(args.faithful_cap)
    if "ram" in out:
        _ram_summary(out["ram"])
    if "times" in out:
        times = out["times"]
        print("fast/faithful time ratio per N: " + ", ".join(
            f"N={f['N']}: {f['seconds'] / max(g['seconds'], 1e-9):.3f}"
            for f, g in zip([r for r in times if r["mode"] == "fast"], [r for r in times if r["mode"] == "faithful"])))
    for table in [r for r in out.get("platform", []) if "k" in r]:
        print(f"neighbour table at N={table['N']}: half matrix / full rows = {table['user_cpu_ratio_new_old']} "
              f"(user CPU), {table['wall_ratio_new_old']} (wall); identical: {table['identical']}")
    return out


def _ram_summary(ram):
    a, b = ram[0], ram[-1]
    print(f"peak RSS grew {b['peak_rss_MiB'] - a['peak_rss_MiB']} MiB from N={a['N']} to N={b['N']}; "
          f"latents grew {b['latents_MiB'] - a['latents_MiB']:.1f} MiB, descriptors "
          f"{b['descriptors_MiB'] - a['descriptors_MiB']:.2f} MiB, the N0 = N/50 extracted images "
          f"{b['extracted_MiB'] - a['extracted_MiB']:.1f} MiB; one IMAGE batch would grow "
          f"{b['one_image_batch_MiB'] - a['one_image_batch_MiB']} MiB")


if __name__ == "__main__":
    main()
