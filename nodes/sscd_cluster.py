"""FineXtractSSCDCluster: N generated images -> N0 extracted images (paper §4.3), thin over
``clustering.extract``."""
from __future__ import annotations

import json

import torch

import comfy.model_management
import comfy.utils
from comfy_api.v0_0_2 import io, ui

from . import schema
from ..clustering import MODES, extract
from .sscd_model import WHERE, distilled_descriptor, sscd_descriptor

Clusters = io.Custom("FINEXTRACT_CLUSTERS")
"""dict: indices, clusters, sizes, threshold, mode, time_capped, descriptor, centred, prefilter,
n_generated, reference_mean, provenance (the sampler's 'finextract' record), n0."""


def _as_batch(images) -> torch.Tensor:
    """A decoded chunk as an IMAGE batch (video VAEs return B×T×H×W×C)."""
    return images.reshape(-1, *images.shape[-3:]) if images.ndim == 5 else images


def image_source(latent, vae, images):
    """``(fetch, n, provenance)`` for LATENT+VAE (decoded chunk by chunk) or an IMAGE batch."""
    if images is not None and latent is None:
        return (lambda idx: images[list(idx)]), images.shape[0], {}
    if latent is not None and vae is not None and images is None:
        samples = latent["samples"]
        return ((lambda idx: _as_batch(vae.decode(samples[list(idx)])).float().cpu()),
                samples.shape[0], dict(latent.get("finextract") or {}))
    raise ValueError("connect either LATENT and VAE (bounded memory, for N = 50 x N0) or IMAGE "
                     "(small runs), not both and not LATENT without VAE")


class FineXtractSSCDCluster(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema(
            node_id="FineXtractSSCDCluster", display_name="FineXtract SSCD Cluster",
            category="finextract",
            description=("Embeds the N generated images with SSCD (decoding LATENT in chunks, keeping "
                         "only descriptors), partitions the similarity graph into cliques with a "
                         "bisected threshold until there are N0 of them, and outputs each clique's "
                         "central image (paper §4.3). " + WHERE + "."),
            search_aliases=["sscd cluster", "clique clustering", "extract training images", "finextract cluster"],
            inputs=[
                io.Int.Input("n0", default=5, min=1, max=100000, tooltip="N0: number of training images to extract (the fine-tune's dataset size)."),
                io.Combo.Input("mode", options=list(MODES), default="fast", tooltip="fast: greedy densest-first cliques, polynomial (10k images in seconds). faithful: exact maximal cliques (networkx) as the paper, time cap per threshold."),
                io.Float.Input("time_cap", default=30.0, min=0.1, max=3600.0, step=1.0, tooltip="Faithful mode: seconds per threshold before moving on to a higher one (paper: 30)."),
                io.Boolean.Input("centred", default=False, tooltip="Cluster on centred descriptors (the generated set's mean removed, re-normalised), as the SSCD authors recommend for one domain."),
                io.Boolean.Input("prefilter", default=False, tooltip="Fast pre-filter: the distilled SSCD student ranks all images, the densest are re-embedded with full SSCD and clustered. Never mixes the two models' scores."),
                io.Int.Input("keep", default=0, min=0, max=1000000, tooltip="Pre-filter: images kept for full SSCD (0 = 10 x N0)."),
                io.Int.Input("chunk_size", default=8, min=1, max=1024, tooltip="Images decoded and embedded at a time (memory bound)."),
                io.Latent.Input("latent", optional=True, tooltip="The N generated latents (from the FineXtract sampler; its provenance is passed on). Needs VAE."),
                io.Vae.Input("vae", optional=True, tooltip="VAE to decode the latents, chunk by chunk."),
                io.Image.Input("images", optional=True, tooltip="Or the N generated images as one IMAGE batch (small runs)."),
            ],
            outputs=[
                io.Image.Output("extracted", tooltip="The N0 central images, largest cluster first."),
                io.String.Output("summary", tooltip="Descriptor used, threshold, cluster sizes, whether a time cap was hit."),
                Clusters.Output("clusters", tooltip="Indices, cluster sizes, threshold, descriptor and provenance, for ExtractionMetrics."),
            ],
        )

    @classmethod
    def execute(cls, n0, mode, time_cap, centred, prefilter, keep, chunk_size, latent=None, vae=None,
                images=None) -> io.NodeOutput:
        fetch, n, provenance = image_source(latent, vae, images)
        bar = comfy.utils.ProgressBar(max(n, 1))
        out = extract(fetch, n, n0, sscd_descriptor(), mode=mode, time_cap=time_cap, centred=centred,
                      student=distilled_descriptor() if prefilter else None, keep=keep or None,
                      chunk_size=chunk_size, progress=lambda stage, done, total: bar.update_absolute(done, total),
                      check_interrupt=comfy.model_management.throw_exception_if_processing_interrupted)
        extracted = torch.cat([fetch(out.result.indices[i:i + chunk_size])
                               for i in range(0, n0, chunk_size)])
        clusters = {**out.summary(), "n0": n0, "provenance": provenance, "parameters": {
            "n0": n0, "mode": mode, "time_cap": time_cap, "centred": centred, "prefilter": prefilter,
            "keep": keep, "chunk_size": chunk_size}}
        r = out.result
        summary = json.dumps({
            "descriptor": out.descriptor, "prefilter": out.prefilter, "mode": r.mode, "n_generated": n,
            "n0": n0, "threshold": round(r.threshold, 4), "sizes": r.sizes, "indices": r.indices,
            "time_capped": r.time_capped, "capped_thresholds": r.capped_thresholds,
            "dropped": r.dropped, "centred": centred, "seconds": round(r.seconds, 2)}, indent=1)
        return io.NodeOutput(extracted, summary, clusters, ui=ui.PreviewText(summary))


NODES = [FineXtractSSCDCluster]
