"""What Ray adds and what a second worker gives, side by side in one run (``finextract audit --ray``).

    python -m finextract.bench.ray [--n 24] [--shards 4] [--steps 4]

On the miniature world of the ``--ray`` tests (three LoRA audits of the bundled base, N0 = 5,
64 px, ``--cpu``, one thread per process) it times three runs of the same audit, each a fresh
command with a fresh ``--out``:

- ``single``: ``finextract audit`` on this machine, no Ray (``--batch-size 1``, as a shard makes
  its images);
- ``ray ×1``: ``--ray`` with ``--workers 1`` on a local cluster (head + two one-CPU worker nodes,
  started once before, as a platform's cluster stands);
- ``ray ×2``: the same with ``--workers 2``.

and prints the speed-up of two workers over one (``ray ×1 ÷ ray ×2``), Ray's overhead
(``ray ×1 ÷ single``: the same work on one worker; what Ray adds is joining the cluster, starting
the actor, a round trip, the shard's file check and the shard files per step) and that overhead
per step (``(ray ×1 − single) ÷ steps``, steps = shards + merges), and whether the three runs'
reports are equal. On a machine with two cores and other work the speed-up is bounded by the
cores free, not by Ray.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile
import time

from .. import host
from . import test_fixture

_cluster = test_fixture("host/ray_cluster")


def audit(env, manifest, out, args, *extra) -> float:
    """Seconds one ``finextract audit`` command takes (from start to exit)."""
    argv = [sys.executable, "-m", "finextract", "audit", "--comfyui", str(host.comfyui_path()), "--manifest",
            str(manifest), "--n", str(args.n), "--steps", str(args.steps), "--size", "64", "--batch-size", "1",
            "--cpu", "--out", str(out), *extra]
    start = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return seconds


def reports(out: pathlib.Path) -> dict:
    """Each model's report less its time stamps."""
    found = {}
    for model in _cluster.MODELS:
        data = json.loads(next((out / model).glob("report_*.json")).read_text())
        data.pop("created_utc")
        data["clustering"].pop("seconds")
        found[model] = data
    return found


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=24, help="images per model")
    p.add_argument("--shards", type=int, default=4, help="shards per model")
    p.add_argument("--steps", type=int, default=4, help="sampler steps per image")
    args = p.parse_args(argv)
    if host.comfyui_path() is None:
        raise SystemExit("no ComfyUI: set COMFYUI_PATH to a ComfyUI checkout")
    with tempfile.TemporaryDirectory(prefix="finextract-bench-ray-") as tmp:
        tmp = pathlib.Path(tmp)
        env = {**host.pack_env(tmp), "OMP_NUM_THREADS": "1"}
        manifest = _cluster.write_world(tmp / "world")
        models = len(_cluster.MODELS)
        steps = models * args.shards + models
        print(f"{models} models x N = {args.n} in {args.shards} shards ({steps} steps with the merges), "
              f"{args.steps} sampler steps, 64 px, CPU, 1 thread per process", flush=True)
        times = {"single": audit(env, manifest, tmp / "single", args)}
        with _cluster.local_cluster(env, workers=2) as address:
            for workers in (1, 2):
                times[f"ray x{workers}"] = audit(env, manifest, tmp / f"ray{workers}", args, "--ray", address,
                                                 "--workers", str(workers), "--shards", str(args.shards))
        equal = reports(tmp / "single") == reports(tmp / "ray1") == reports(tmp / "ray2")
    for name, seconds in times.items():
        print(f"  {name:<8} {seconds:7.1f} s")
    print(f"speed-up of 2 workers over 1 (ray x1 / ray x2): {times['ray x1'] / times['ray x2']:.2f}")
    print(f"Ray's overhead (ray x1 / single):             {times['ray x1'] / times['single']:.2f}  "
          f"({(times['ray x1'] - times['single']) / steps:+.2f} s per step)")
    print(f"reports equal across the three runs: {'yes' if equal else 'NO'}")


if __name__ == "__main__":
    main()
