"""One model's audit through the pack's nodes, with ComfyUI as a library (see ``audit.py``).
Importing this module does not import ComfyUI; :class:`AuditPipeline` does, through
:mod:`..host`."""
from __future__ import annotations

import json
import pathlib
import sys
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from ..clustering import image_files, image_problems
from ..host import HostError, Library
from ..modelfiles import CHECKPOINT, kind_of
from . import UsageError, encoders, progress
from .resume import GenerationStore, differences
from .shards import (contiguous_runs, generation_indices, load_generation, run_identity, save_generation, shard_path,
                     shard_run)


@dataclass
class ModelSpec:
    name: str
    base: pathlib.Path
    train: pathlib.Path
    caption: str
    finetuned: pathlib.Path | None = None
    loras: list[tuple[pathlib.Path, float]] = field(default_factory=list)
    clip: tuple[pathlib.Path, ...] = ()
    """Text-encoder files, for a base without its own (a diffusion model only): :mod:`.encoders`."""
    clip_type: str | None = None
    """ComfyUI's type of the text-encoder files (its CLIPLoader's / DualCLIPLoader's ``type``)."""
    vae: pathlib.Path | None = None
    """A VAE file: for a base without its own, or in place of a checkpoint's."""
    n0: int | None = None
    """How many training images: counted by :func:`.audit_inputs.check`, whose decode of every
    one is the only one before ExtractionMetrics reads them to score (a ``--ray`` shard step, the
    driver and the merge take the count from here instead of decoding the folder again)."""

    def files(self) -> list[tuple[str, pathlib.Path]]:
        """(field, path) of every model file the audit reads: what is checked before any work, on
        every ``--ray`` worker, and made absolute for them."""
        return ([("base", self.base)] + ([("finetuned", self.finetuned)] if self.finetuned else [])
                + [("lora", path) for path, _ in self.loras] + [("clip", path) for path in self.clip]
                + ([("vae", self.vae)] if self.vae else []))

    def training_images(self) -> list[pathlib.Path]:
        """The training images (N0 is their count), each decoded once to be sure it is one;
        :class:`UsageError` names the folder, or every file that is not a whole image."""
        if not self.train.is_dir():
            what = "a file, not a folder" if self.train.exists() else "no such folder"
            raise UsageError(f"{self.train}: {what}; give the folder that holds the training images")
        try:
            files = image_files(self.train)
        except ValueError as exc:
            raise UsageError(f"{exc}; put the training images (the fine-tune's data) there") from None
        problems = image_problems(files)
        if problems:
            raise UsageError("\n".join(problems))
        return files


def save_png(image: torch.Tensor, path) -> None:
    """One ComfyUI IMAGE (H, W, 3 in [0, 1]) as a PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((image.clamp(0, 1).numpy() * 255).round().astype(np.uint8)).save(path)


class AuditPipeline:
    def __init__(self, args):
        self.args = args
        self.comfy = Library(args.comfyui, cpu=args.cpu, output_dir=args.out)
        self.comfy.folder_paths.set_temp_directory(str(args.out / ".comfy-temp"))
        self.check_choices()
        from ..nodes.pair import DIFFUSION_MODEL_LABEL, ResidentBase, load_pair  # the loader node's code (needs ComfyUI)

        self.pair_loader, self.base, self.diffusion_model_label = load_pair, ResidentBase(), DIFFUSION_MODEL_LABEL
        """The base checkpoint stays loaded across models: a manifest's LoRAs of one base (and a
        ``--ray`` worker's) read, hash and build it once."""
        self.loaded = None
        """(files, pair, encoders) of the last model loaded: a worker of ``--ray`` takes several
        shards of one model in turn and loads its files once (a single-machine run loads each model
        once anyway)."""

    def check_choices(self) -> None:
        """``--sampler`` and ``--scheduler`` among the sampler node's options, ``--flux-guidance``
        within FluxGuidance's range: ComfyUI's own lists and bounds, known once it is imported,
        checked before any model loads (a node run as a library skips the validation ComfyUI
        gives a prompt)."""
        options = self.comfy.options
        problems = [f"--{flag} {value}: ComfyUI has no {flag} of that name; choose one of "
                    f"{', '.join(options('FineXtractModelGuidanceSampler', key))}"
                    for flag, key, value in (("sampler", "sampler_name", self.args.sampler),
                                             ("scheduler", "scheduler", self.args.scheduler))
                    if value not in options("FineXtractModelGuidanceSampler", key)]
        guidance = self.comfy.schema_input("FluxGuidance", "guidance")
        if not guidance.min <= self.args.flux_guidance <= guidance.max:
            problems.append(f"--flux-guidance {self.args.flux_guidance:g}: ComfyUI's FluxGuidance takes "
                            f"{guidance.min:g} to {guidance.max:g} (FLUX.1 [dev] samples at 3.5)")
        if problems:
            raise UsageError("\n".join(problems))

    def check_models(self, specs: list[ModelSpec]) -> None:
        """Every model's text-encoder type among those ComfyUI's loader of its files takes
        (:func:`.encoders.clip_type_problem`), all at once, before any model loads."""
        problems = [f"{spec.name}: {problem}" for spec in specs if spec.clip
                    and (problem := encoders.clip_type_problem(self.comfy, len(spec.clip), spec.clip_type))]
        if problems:
            raise UsageError("\n".join(problems))

    def model_name(self, path: pathlib.Path) -> str:
        """The name the pair loader picks a base or full fine-tune by: a checkpoint (or a pickled
        file) from ComfyUI's checkpoints folder, any other file as a diffusion model only
        (``diffusion_models/<name>``), as ComfyUI's Load Checkpoint and Load Diffusion Model
        tell the two layouts apart by folder."""
        kind = kind_of(path)
        if kind is None or kind[0] == CHECKPOINT:
            return self.comfy.register_file("checkpoints", path)
        return self.diffusion_model_label + self.comfy.register_file("diffusion_models", path)

    def load(self, spec: ModelSpec):
        """(pair, encoders) of the spec: the Dual Model Loader's pair
        (:func:`..nodes.pair.load_pair`) of its files, on the base kept loaded when the model
        before had the same base file, and its text encoders and VAE (:func:`.encoders.load`);
        the loader's refusals (families, same file, a LoRA that does not fit) become a
        :class:`UsageError` naming the model. The model loaded last is reused; another model
        replaces it (dropped first: one pair in memory at a time)."""
        files = (spec.base, spec.finetuned, tuple(spec.loras), spec.clip, spec.clip_type, spec.vae)
        if self.loaded is not None and self.loaded[0] == files:
            return self.loaded[1:]
        self.loaded = None
        register = self.comfy.register_file
        try:
            loras = [(register("loras", path), strength) for path, strength in spec.loras]
            finetuned = self.model_name(spec.finetuned) if spec.finetuned else None
            base = self.model_name(spec.base)
        except HostError as exc:  # a name ComfyUI would resolve to another file
            raise UsageError(f"{spec.name}: {exc}") from exc
        loads = self.base.loads
        try:
            pair = self.comfy.call(self.pair_loader, base, finetuned, loras, self.base)
        except ValueError as exc:  # the loader's refusals are plain ValueErrors (nodes/pair.py says why)
            raise UsageError(f"{spec.name}: {exc}") from exc
        print(f"  base {spec.base.name}: {'loaded' if self.base.loads > loads else 'kept loaded'}", file=sys.stderr)
        loaded = encoders.load(self.comfy, spec, pair, self.args.flux_guidance)
        print(f"  {loaded.describe()}", file=sys.stderr)
        self.loaded = (files, pair, loaded)
        return pair, loaded

    def sampler_settings(self, spec: ModelSpec) -> dict:
        """The sampler node's inputs that decide the images (besides models and conditioning)."""
        a = self.args
        return dict(seed=a.seed, steps=a.steps, sampler_name=a.sampler, scheduler=a.scheduler, width=a.size,
                    height=a.size, method=a.method, w=a.w if a.w is not None else (5.0 if spec.loras else 3.0), k=a.k)

    def identity(self, spec: ModelSpec, pair, coders: encoders.Encoders, n: int) -> dict:
        """The run's identity (:func:`.shards.run_identity`): what saved chunks and shards are checked against."""
        a = self.args
        record = self.comfy.nodes["FineXtractModelGuidanceSampler"].record(
            pair.base, pair.finetuned, start=0, count=n, batch_size=a.batch_size, **self.sampler_settings(spec))
        return run_identity(record, n, spec.caption, coders.record)

    def generate(self, spec: ModelSpec, pair, coders: encoders.Encoders, n: int, indices: list[int]):
        """Latents of images ``indices`` of the run, the run's identity, and how many images this
        call made. Every chunk of ``--batch-size`` images is saved as it is made (:mod:`.resume`);
        chunks a stopped run saved are loaded instead of made again."""
        base, finetuned = pair.base, pair.finetuned
        a, settings = self.args, self.sampler_settings(spec)
        store = GenerationStore(a.out / spec.name / "generation", self.identity(spec, pair, coders, n))
        if a.restart and (discarded := store.discard()):
            print(f"  --restart: discarded {discarded} saved chunk(s) in {store.folder}", file=sys.stderr)
        kept = store.load(indices)
        missing = [i for i in indices if i not in kept]
        if kept:
            print(f"  resuming: {len(kept)} of {len(indices)} images kept in {store.folder}; "
                  f"generating the other {len(missing)}", file=sys.stderr)
        positive, negative = coders.prompts(self.comfy, spec.caption)
        bar = progress.bar(f"  generating {len(indices)} images ({len(kept)} resumed)", len(indices),
                           initial=len(kept), scale=a.steps)
        try:
            for first in range(0, len(missing), a.batch_size):
                chunk, parts = missing[first:first + a.batch_size], []
                for start, count in contiguous_runs(chunk):  # one run unless --shard spreads the indices
                    # the node counts its own count × steps: offset by what the job made before it
                    before = (len(kept) + sum(map(len, parts))) * a.steps
                    self.comfy.on_progress(lambda value, _total, before=before: bar.to(before + value))
                    parts.append(self.comfy.run(
                        "FineXtractModelGuidanceSampler", base=base, finetuned=finetuned, positive=positive,
                        negative=negative, count=count, start=start, batch_size=a.batch_size, **settings)[0]["samples"])
                latents = torch.cat(parts)
                try:
                    store.save(chunk, latents)
                except OSError as exc:
                    raise SystemExit(
                        f"{spec.name}: could not save images {chunk[0]}..{chunk[-1]} in {store.folder} "
                        f"({exc.strerror or exc}): the {len(kept)} of {len(indices)} images saved before are "
                        "kept; free space (or fix the folder) and run the same command to resume") from None
                kept.update(zip(chunk, latents))
        except KeyboardInterrupt:
            bar.close()  # its last line first, then why it stopped
            print(f"interrupted: {len(kept)} of {len(indices)} images kept in {store.folder}; "
                  "run the same command to resume", file=sys.stderr)
            raise SystemExit(130) from None
        finally:
            bar.close()  # closing twice is harmless
        return torch.stack([kept[i] for i in indices]), store.identity, len(missing)

    def audit(self, spec: ModelSpec) -> dict:
        """Generate (or merge shards), cluster, score: the model's result. A ``--shard`` step
        stops after saving its shard, returning ``{"name", "shard", "made", "kept"}``: how many
        images it generated, and whether the shard file was there already, saved by an earlier
        run of the same command (then it is kept untouched and nothing is generated)."""
        a = self.args
        out = a.out / spec.name
        n0 = spec.n0
        n = a.n or 50 * n0
        pair, coders = self.load(spec)
        out.mkdir(parents=True, exist_ok=True)
        print(f"  {pair.report}".replace("\n", "\n  "), file=sys.stderr)
        if a.merge:
            try:
                latents, run = load_generation(out)
            except ValueError as exc:  # shards of other runs, missing or duplicated, not shards
                raise UsageError(f"{spec.name}: --merge: {exc}") from exc
            if run != (now := self.identity(spec, pair, coders, n)):  # the report must name what ran
                raise UsageError(f"{spec.name}: --merge: the shards in {out / 'shards'} were made by another run "
                                 f"than this command ({differences(run, now)}): merge with the arguments and "
                                 f"files they were made with")
        else:
            if a.shard and shard_run(path := shard_path(out, a.shard)) == self.identity(spec, pair, coders, n):
                print(f"  {path} saved by an earlier run of this command: kept", file=sys.stderr)
                return {"name": spec.name, "shard": a.shard, "made": 0, "kept": True}
            latents, run, made = self.generate(spec, pair, coders, n, generation_indices(n, a.shard))
            if a.shard:
                path = save_generation(out, latents, run, a.shard)
                print(f"  saved {path}", file=sys.stderr)
                return {"name": spec.name, "shard": a.shard, "made": made, "kept": False}
        return self.score(spec, coders.vae, {"samples": latents, "finextract": run}, n0, n)

    def score(self, spec: ModelSpec, vae, latent: dict, n0: int, n: int) -> dict:
        """SSCDCluster on the N latents, then ExtractionMetrics against the training folder
        (handed to the node as a subfolder of ComfyUI's input directory, as in the workflows)."""
        a = self.args
        # SSCDCluster reports its stages through one ComfyUI bar: decoding + embedding, then clustering
        self.comfy.on_progress(progress.phases([(f"  embedding {n} images with SSCD", "images"),
                                                (f"  clustering into {n0} cliques", "thresholds")]))
        extracted, summary, clusters = self.comfy.run(
            "FineXtractSSCDCluster", n0=n0, mode="fast", time_cap=30.0, centred=False, prefilter=False,
            keep=0, chunk_size=8, latent=latent, vae=vae)
        self.comfy.folder_paths.set_input_directory(str(spec.train.resolve().parent))
        taus = sorted({0.6, 0.7, a.tau})
        report_json, report_image = self.comfy.run(
            "FineXtractExtractionMetrics", extracted=extracted, training_folder=spec.train.resolve().name,
            taus=", ".join(f"{t:g}" for t in taus), centred=False,
            filename_prefix=f"{spec.name}/report", clusters=clusters)
        report = json.loads(report_json)
        save_png(report_image[0], a.out / spec.name / "report.png")
        for i, image in enumerate(extracted):  # the evidence: the N0 central images
            save_png(image, a.out / spec.name / "extracted" / f"extracted-{i:03d}.png")
        print(f"  {json.loads(summary)['sizes']} cluster sizes; report {report['report_path']}", file=sys.stderr)
        return {"name": spec.name, "n0": n0, "n": n, "report": report["report_path"],
                "metrics": report["metrics"]["raw"]}
