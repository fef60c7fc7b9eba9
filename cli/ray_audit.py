"""``finextract audit … --ray [ADDRESS]``: one audit's generation spread over a Ray cluster.

A platform auditing every upload has thousands of (model, shard) steps a day and a Ray cluster
(KubeRay) of GPU machines already; this module maps the hand-run split of ``--shard i/n`` +
``--merge`` onto it, and adds no scheduler of its own beyond choosing which free worker takes
which step:

- **Steps are the single-machine code.** A shard step is :meth:`.pipeline.AuditPipeline.audit`
  with ``--shard i/n``: it generates images ``shard_indices(N, i, n)``, saving every chunk as it
  is made (:mod:`.resume`), and writes ``<out>/<name>/shards/shard-i-of-n.safetensors``
  atomically before the call returns. Once a model's n shard files exist, one worker runs the
  same audit with ``--merge`` (check, put in image order, cluster, score, report). The summary and
  the exit status are :func:`.audit.finish`'s. Image i depends only on (seed, i), so the result
  is the single-machine run's, bit for bit (on the same kind of device; a shard runs the sampler
  one image per call, so the equal single-machine run is the ``--batch-size 1`` one where the
  kernels round differently per batch size).
- **Workers keep models resident.** A worker is a Ray actor (:class:`ShardWorker`, one GPU, or
  one CPU with ``--cpu``) that imports ComfyUI once and keeps the last model pair loaded, and its
  base across models of that base (:class:`..nodes.pair.ResidentBase`); a free worker takes the
  next shard of the model it holds, else of another model of the base it holds, else the next in
  manifest order (:func:`next_step`).
- **Nothing lost, nothing done twice.** A shard file exists only whole and only once all its
  images are made. A worker killed mid-shard is restarted by Ray and the step retried
  (:data:`MAX_RETRIES`); the retry resumes from the chunks the killed one saved. A re-run of the
  same command (after the driver was killed, or a failure) keeps every shard file of the same run
  identity untouched and generates nothing for it.

Storage is a folder every node sees at the same path (a shared volume); the models, the training
images and ComfyUI too. Object-store URIs (``s3://``, ``gs://``) are not supported yet: the shard
and chunk files are written through the local filesystem (docs/batch.md).
"""
from __future__ import annotations

import copy
import dataclasses
import math
import os
import socket
import sys
import time

import ray

from ..modelfiles import model_file_problem
from . import progress
from .audit import finish
from .pipeline import ModelSpec
from .resume import GenerationStore
from .shards import generation_indices

SHARD_IMAGES = 250
"""Default images per shard: minutes of one GPU at SD1.5 size, so a retry loses little."""
MAX_RETRIES = 3
"""How often a step is retried after its worker died (killed, out of memory, node lost)."""


class WorkerError(Exception):
    """A step failed on a worker for a reason a retry cannot fix (a file missing there, a model
    the pair loader refuses, saved images of another run); the message names the worker."""


def worker_name() -> str:
    return f"{socket.gethostname()} ({ray.util.get_node_ip_address()}, pid {os.getpid()})"


def missing_inputs(spec: ModelSpec) -> list[str]:
    """What a step of ``spec`` reads that is not here: model files and the training folder."""
    problems = [p for what, path in spec.files() if (p := model_file_problem(path, f"{spec.name} {what}")) is not None]
    if not spec.train.is_dir():
        problems.append(f"{spec.name} train {spec.train}: no such folder")
    return problems


class ShardWorker:
    """One worker: ComfyUI imported once, the last model pair kept loaded (``AuditPipeline``)."""

    def __init__(self, args):
        from ..host import HostError
        from .pipeline import AuditPipeline

        self.where, self.args, self.problem = worker_name(), copy.copy(args), None
        try:
            self.pipeline = AuditPipeline(self.args)
        except (HostError, SystemExit) as exc:  # kept for the first step, which says where
            self.problem = f"ComfyUI cannot be used on worker {self.where}: {exc}"

    def run(self, spec: ModelSpec, shard: tuple[int, int] | None) -> dict:
        """The ``--shard i/n`` step of ``spec``, or its ``--merge`` step when ``shard`` is None."""
        if self.problem:
            raise WorkerError(self.problem)
        missing = missing_inputs(spec)
        if missing:
            raise WorkerError("\n".join(missing) + f"\non worker {self.where}: every node must see the models "
                              "and training images at the paths the command gives (mount them there)")
        self.args.shard, self.args.merge = shard, shard is None
        try:
            result = self.pipeline.audit(spec)
        except (ValueError, SystemExit) as exc:  # UsageError is a ValueError; SystemExit would end the actor
            raise WorkerError(f"{exc}\n(on worker {self.where})") from None
        return {**result, "worker": self.where}


@dataclasses.dataclass(frozen=True)
class Step:
    model: int
    """Index of the model in the manifest."""
    shard: int | None
    """The shard to generate, or None: merge the model's shards."""


def next_step(pending: list[Step], held: int | None, bases: list) -> Step:
    """The step a free worker holding model ``held`` (None: nothing yet) takes: the first pending
    step of that model, else of another model of the same base, else the first pending step."""
    if held is not None:
        for same in (lambda s: s.model == held, lambda s: bases[s.model] == bases[held]):
            for step in pending:
                if same(step):
                    return step
    return pending[0]


def connect(address: str):
    """Join the cluster at ``address`` ("" → Ray's default: ``$RAY_ADDRESS``, the cluster started
    last on this machine, else a new local one). Worker logs stay on the workers (the driver
    draws the cluster's progress)."""
    try:
        ray.init(address=address or None, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    except ConnectionError as exc:
        raise SystemExit(f"finextract audit --ray {address}: no Ray cluster answers there ({exc})") from None
    return ray.cluster_resources()


def worker_count(args, resources: dict) -> int:
    """How many workers to start (at most one per device of the cluster); SystemExit saying what
    is missing when the cluster has no device for one."""
    device = "CPU" if args.cpu else "GPU"
    capacity = int(resources.get(device, 0))
    if capacity < 1:
        have = ", ".join(f"{k} {v:g}" for k, v in sorted(resources.items()) if k in ("CPU", "GPU", "memory"))
        fix = "add GPU worker nodes, or add --cpu to generate on CPUs" if device == "GPU" else "add worker nodes"
        raise SystemExit(f"finextract audit --ray: the Ray cluster has no {device} for a worker ({have}): {fix}")
    if args.workers and args.workers > capacity:
        print(f"ray: --workers {args.workers}, but the cluster has {capacity} {device}(s) free: "
              f"starting {capacity}", file=sys.stderr)
    return min(args.workers or capacity, capacity)


def absolute(args, specs: list[ModelSpec]):
    """The arguments and models with absolute paths: workers do not run in this folder."""
    args = copy.copy(args)
    args.out, args.comfyui = args.out.absolute(), args.comfyui.absolute()
    specs = [dataclasses.replace(s, base=s.base.absolute(), train=s.train.absolute(),
                                 finetuned=s.finetuned.absolute() if s.finetuned else None,
                                 loras=[(p.absolute(), w) for p, w in s.loras],
                                 clip=tuple(p.absolute() for p in s.clip), vae=s.vae.absolute() if s.vae else None)
             for s in specs]
    return args, specs


def discard_saved(args, specs: list[ModelSpec]) -> None:
    """``--restart`` with ``--ray``: every model's saved chunks and shard files go once, here,
    before any step (a step's own ``--restart`` would delete the other shards' chunks)."""
    for spec in specs:
        folder = args.out / spec.name
        chunks = GenerationStore(folder / "generation", {}).discard()
        shards = sorted((folder / "shards").glob("shard-*.safetensors"))
        for path in shards:
            path.unlink()
        if chunks or shards:
            print(f"  --restart: discarded {chunks} saved chunk(s) and {len(shards)} shard file(s) of {spec.name}",
                  file=sys.stderr)
    args.restart = False


def run_on_ray(args, specs: list[ModelSpec]) -> int:
    """The audit of ``specs`` on the cluster; the exit status of :func:`.audit.finish`, or 2 when
    a step failed (what was saved stays for a re-run)."""
    args, specs = absolute(args, specs)
    start = time.monotonic()
    try:
        workers = worker_count(args, connect(args.ray))
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.restart:
        discard_saved(args, specs)
    sizes = [args.n or 50 * spec.n0 for spec in specs]
    shards = [min(n, args.shards or math.ceil(n / SHARD_IMAGES)) for n in sizes]
    bases = [spec.base for spec in specs]
    order = sorted(range(len(specs)), key=lambda m: (str(bases[m]), m))  # one base's models together
    pending = [Step(m, i) for m in order for i in range(shards[m])]
    resources = {"num_cpus": 1, "num_gpus": 0 if args.cpu else 1}
    actors = [ray.remote(ShardWorker).options(**resources, max_restarts=-1, max_task_retries=MAX_RETRIES)
              .remote(args) for _ in range(workers)]
    print(f"ray: {len(pending)} shards of {len(specs)} model(s) on {workers} worker(s) "
          f"({'1 CPU' if args.cpu else '1 GPU'} each)", file=sys.stderr)
    held: list[int | None] = [None] * workers
    idle, running, left = list(range(workers)), {}, list(shards)
    results, made, kept = {}, 0, 0
    bar = progress.bar("ray: shards done", len(pending), unit="shards")
    try:
        while pending or running:
            while idle and pending:
                worker = idle.pop(0)
                step = next_step(pending, held[worker], bases)
                pending.remove(step)
                shard = None if step.shard is None else (step.shard, shards[step.model])
                running[actors[worker].run.remote(specs[step.model], shard)] = (worker, step)
            (ref,), _ = ray.wait(list(running), num_returns=1)
            worker, step = running.pop(ref)
            result = ray.get(ref)
            idle.append(worker)
            held[worker] = step.model
            spec = specs[step.model]
            if step.shard is None:
                results[step.model] = result
                bar.note(f"  {spec.name}: merged on {result['worker']}, AS {result['metrics']['AS']:.4f} "
                         f"({len(results)}/{len(specs)} models done)")
                continue
            if result["kept"]:
                kept += 1
                bar.found_done(1)
            else:
                made += result["made"]
                size = len(generation_indices(sizes[step.model], shard=(step.shard, shards[step.model])))
                if result["made"] < size:
                    bar.note(f"  {spec.name} shard {step.shard}/{shards[step.model]}: {size - result['made']} of "
                             f"{size} images resumed from an earlier attempt")
                bar.update(1)
            left[step.model] -= 1
            if not left[step.model]:
                pending.insert(0, Step(step.model, None))  # the worker that made its last shard holds it
    except ray.exceptions.RayTaskError as exc:
        bar.close()
        cause = exc.cause if isinstance(exc.cause, WorkerError) else exc
        print(f"finextract audit --ray: stopped at {specs[step.model].name}"
              f"{'' if step.shard is None else f' shard {step.shard}/{shards[step.model]}'}:\n  "
              + str(cause).replace("\n", "\n  ") + f"\n  the shards saved so far are kept in {args.out}; "
              "run the same command to resume", file=sys.stderr)
        return 2
    except ray.exceptions.RayActorError as exc:
        bar.close()
        what = specs[step.model].name + ("" if step.shard is None else f" shard {step.shard}/{shards[step.model]}")
        print(f"finextract audit --ray: the worker on {what} died and {MAX_RETRIES} retries did not finish it: "
              f"{exc}\n  the shards saved so far are kept in {args.out}; run the same command to resume", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        bar.close()
        print(f"\ninterrupted: the shards and images saved so far are kept in {args.out}; "
              "run the same command to resume", file=sys.stderr)
        return 130
    finally:
        for actor in actors:
            ray.kill(actor)
        ray.shutdown()  # disconnects (and stops the cluster if this command started it)
    bar.close()
    print(f"ray: {len(specs)} model(s), {sum(shards)} shards ({kept} kept from an earlier run), "
          f"{made} images generated, in {time.monotonic() - start:.0f} s", file=sys.stderr)
    return finish(args, [results[m] for m in range(len(specs))])
