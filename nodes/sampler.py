"""FineXtractModelGuidanceSampler: the paper's all-in-one generation of N images (§4.3)."""
from __future__ import annotations

import inspect
import json

import torch

import comfy.model_management
import comfy.samplers
import comfy.utils
from comfy_api.v0_0_2 import io, ui


from . import schema
from ..modelfiles import generation_record
from ..sampling import PerImageNoise, generate
from .guider import ModelGuidanceGuider, method_inputs, model_inputs


def latent_shape(model, width: int, height: int) -> tuple[int, ...]:
    """One image's latent shape from the model's own latent format."""
    fmt = model.get_model_object("latent_format")
    ratio = getattr(fmt, "spacial_downscale_ratio", 8)
    return (fmt.latent_channels, height // ratio, width // ratio)


def takes_noise_sampler(sampler) -> bool:
    """Whether the sampler draws its noise through ComfyUI's ``noise_sampler`` argument (every
    ancestral / SDE sampler of ComfyUI does), so a per-image source can be handed to it."""
    function = getattr(sampler, "sampler_function", None)
    return function is not None and "noise_sampler" in inspect.signature(function).parameters


def is_comfyui_sampler(sampler) -> bool:
    """Whether the sampler's function is ComfyUI's own (``comfy.*``), whose convention is that a
    sampler drawing noise after the start takes a ``noise_sampler``; one of another pack may draw
    noise by itself."""
    function = getattr(sampler, "sampler_function", None)
    return (getattr(function, "__module__", None) or "").startswith("comfy.")


def images_per_call(sampler_name: str, batch_size: int) -> tuple[int, bool]:
    """(chunk size, pass a per-image noise source) that keeps image i independent of the batch:
    samplers taking ComfyUI's ``noise_sampler`` get one drawing each image from its own stream;
    ComfyUI's other samplers draw no noise after the start and batch freely; a sampler of another
    pack without a ``noise_sampler`` runs one image at a time, seeded with that image's seed."""
    sampler = comfy.samplers.sampler_object(sampler_name)
    if takes_noise_sampler(sampler):
        return batch_size, True
    return (batch_size if is_comfyui_sampler(sampler) else 1), False


class FineXtractModelGuidanceSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema(
            node_id="FineXtractModelGuidanceSampler", display_name="FineXtract Model Guidance Sampler",
            category="finextract",
            description=("Generates N images with model guidance (or a baseline) in chunks, image i "
                         "seeded from (seed, i) alone so any image can be reproduced by itself. "
                         "The LATENT carries a 'finextract' provenance record (files, sha256, "
                         "settings, seed rule)."),
            search_aliases=["model guidance sampler", "finextract sampler", "extraction sampler"],
            inputs=[
                *model_inputs(),
                io.Int.Input("count", default=50, min=1, max=100000, tooltip="N, images to generate (paper: N = 50 x N0 training images)."),
                io.Int.Input("start", default=0, min=0, max=10_000_000, tooltip="Index of the first image: start=173, count=1 reproduces image 173 of a run alone."),
                io.Int.Input("batch_size", default=4, min=1, max=256, tooltip="Images per sampler call; does not change any image."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, tooltip="Run seed; image i depends on (seed, i) only."),
                io.Int.Input("steps", default=50, min=1, max=1000, tooltip="Sampling steps (paper: DDIM, 50, for SD1.x and SDXL, Table 3; not measured here for SD3.5 / FLUX)."),
                io.Combo.Input("sampler_name", options=comfy.samplers.SAMPLER_NAMES, default="ddim", tooltip="ComfyUI sampler (paper: DDIM; ComfyUI's 'ddim' is its Euler sampler, for every family, flow models included)."),
                io.Combo.Input("scheduler", options=comfy.samplers.SCHEDULER_NAMES, default="ddim_uniform", tooltip="ComfyUI scheduler."),
                io.Int.Input("width", default=512, min=16, max=8192, step=8, tooltip="Image width in pixels."),
                io.Int.Input("height", default=512, min=16, max=8192, step=8, tooltip="Image height in pixels."),
                *method_inputs(),
            ],
            outputs=[io.Latent.Output(tooltip="All N latents, with a 'finextract' provenance record.")],
        )

    @classmethod
    def record(cls, base, finetuned, *, seed, start, count, batch_size, steps, sampler_name, scheduler,
               width, height, method, w, k) -> dict:
        """The provenance record :meth:`execute` attaches to images ``start .. start+count-1``,
        without sampling: ``finextract audit`` checks images it saved earlier against it before
        resuming a run."""
        models = {role: m.model_options.get("finextract") for role, m in (("base", base), ("finetuned", finetuned))}
        return generation_record(models, method=method, w=w, k=k, seed=seed, start=start, count=count, steps=steps,
                                 sampler=sampler_name, scheduler=scheduler, width=width, height=height,
                                 batch_size=batch_size, latent_shape=list(latent_shape(finetuned, width, height)))

    @classmethod
    def execute(cls, base, finetuned, positive, negative, count, start, batch_size, seed, steps,
                sampler_name, scheduler, width, height, method, w, k) -> io.NodeOutput:
        guider = ModelGuidanceGuider(base, finetuned, method, w, k)
        guider.set_conds(positive, negative)
        shape = latent_shape(finetuned, width, height)
        sigmas = comfy.samplers.calculate_sigmas(finetuned.get_model_object("model_sampling"), scheduler, steps).cpu()
        chunk, per_image_noise = images_per_call(sampler_name, batch_size)
        bar = comfy.utils.ProgressBar(count * steps)
        done = [0]

        def sample(noise, image_seeds):
            sampler = comfy.samplers.sampler_object(sampler_name)
            if per_image_noise:
                sampler.extra_options = {**sampler.extra_options, "noise_sampler": PerImageNoise(
                    image_seeds, shape, noise.dtype, finetuned.load_device)}

            def step(i, *_):
                comfy.model_management.throw_exception_if_processing_interrupted()
                bar.update_absolute(done[0] * steps + (i + 1) * len(image_seeds), count * steps)

            return guider.sample(noise, torch.zeros_like(noise), sampler, sigmas, callback=step,
                                 disable_pbar=True, seed=image_seeds[0])

        def progress(images, _total):
            done[0] = images

        samples = generate(range(start, start + count), chunk, seed, shape, sample, progress=progress,
                           check_interrupt=comfy.model_management.throw_exception_if_processing_interrupted)
        record = cls.record(base, finetuned, seed=seed, start=start, count=count, batch_size=chunk, steps=steps,
                            sampler_name=sampler_name, scheduler=scheduler, width=width, height=height,
                            method=method, w=w, k=k)
        return io.NodeOutput({"samples": samples, "finextract": record},
                             ui=ui.PreviewText(json.dumps(record, indent=1)))


NODES = [FineXtractModelGuidanceSampler]
