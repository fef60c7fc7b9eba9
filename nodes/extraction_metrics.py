"""FineXtractExtractionMetrics: AS and A-ESR@τ (paper Eq. 1–2), the pairs image and the JSON
report, thin over ``clustering.metrics`` / ``clustering.report``."""
from __future__ import annotations

import json
import os

import numpy as np
import torch
from PIL import Image

import comfy.model_management
import folder_paths
from comfy_api.v0_0_2 import io, ui

from . import schema
from ..clustering import (DEFAULT_TAUS, build_report, evaluate, image_files, read_images, render_report,
                          write_report)
from ..modelfiles import NONE
from .sscd_cluster import Clusters
from .sscd_model import sscd_descriptor



def parse_taus(text: str) -> list[float]:
    try:
        taus = [float(t) for t in text.replace(";", ",").split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"taus must be numbers separated by commas, got {text!r}") from None
    if not taus or any(not 0.0 <= t <= 1.0 for t in taus):
        raise ValueError(f"taus must be one or more numbers in [0, 1], got {text!r}")
    return taus


def input_folder_images(folder: str) -> tuple[list[Image.Image], list[str]]:
    """All images of a subfolder of ComfyUI's input directory (sorted by name). The folder must
    resolve inside the input directory: no arbitrary filesystem path. Every image file must decode
    (:func:`..clustering.read_images` names each one that does not)."""
    root = os.path.realpath(folder_paths.get_input_directory())
    path = os.path.realpath(os.path.join(root, folder))
    if os.path.commonpath([root, path]) != root or path == root or not os.path.isdir(path):
        raise ValueError(f"training_folder must be a subfolder of ComfyUI's input directory, got {folder!r}")
    try:
        files = image_files(path)
    except ValueError:
        return [], []
    return read_images(files), [f"{folder}/{f.name}" for f in files]


class FineXtractExtractionMetrics(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema(
            node_id="FineXtractExtractionMetrics", display_name="FineXtract Extraction Metrics",
            category="finextract",
            description=("Scores extracted images against the training images with SSCD: AS (Eq. 1), "
                         "A-ESR@τ (Eq. 2), each training image's best match, SSCD's 0.75 copy "
                         "threshold; shows a training | extracted | score image and writes a JSON "
                         "report with the generation provenance under ComfyUI's output directory."),
            search_aliases=["extraction metrics", "average similarity", "A-ESR", "leakage report", "finextract metrics"],
            is_output_node=True,
            inputs=[
                io.Image.Input("extracted", tooltip="The extracted images (SSCDCluster's output)."),
                io.Image.Input("training", optional=True, tooltip="The training images as an IMAGE batch (e.g. from Load Image)."),
                io.Combo.Input("training_folder", options=[NONE] + folder_paths.get_input_subfolders(), default=NONE,
                               tooltip="Or a folder inside ComfyUI's input directory holding the training images (any sizes)."),
                io.String.Input("taus", default=", ".join(f"{t:g}" for t in DEFAULT_TAUS), tooltip="A-ESR thresholds τ, comma separated (paper: 0.6 loose, 0.7 strict)."),
                io.Boolean.Input("centred", default=False, tooltip="Also report centred scores (reference mean: the generated images when clusters are connected)."),
                io.String.Input("filename_prefix", default="finextract/report", tooltip="JSON report path under ComfyUI's output directory."),
                Clusters.Input("clusters", optional=True, tooltip="SSCDCluster's record: adds clustering figures and generation provenance to the report."),
            ],
            outputs=[
                io.String.Output("report_json", tooltip="Every figure, its provenance and the report's path."),
                io.Image.Output("report_image", tooltip="training | best extracted | score, best first, τ marked."),
            ],
        )

    @classmethod
    def execute(cls, extracted, taus, centred, filename_prefix, training=None, training_folder=NONE,
                clusters=None) -> io.NodeOutput:
        if (training is None) == (training_folder == NONE):
            raise ValueError("give the training images either as IMAGE or as training_folder, exactly one")
        if training is not None:
            train_images, names = list(training), [f"image {i}" for i in range(training.shape[0])]
        else:
            train_images, names = input_folder_images(training_folder)
        if not train_images:
            raise ValueError(f"the training set is empty ({training_folder!r} holds no images)")
        tau_list = parse_taus(taus)
        sscd = sscd_descriptor()
        check = comfy.model_management.throw_exception_if_processing_interrupted
        t = sscd.embed(train_images, check_interrupt=check)
        e = sscd.embed(extracted, check_interrupt=check)
        reference = None
        if clusters is not None and clusters.get("descriptor") == sscd.name and clusters.get("reference_mean"):
            reference = torch.tensor(clusters["reference_mean"])
        metrics = evaluate(t, e, tau_list, reference_mean=reference, centred=centred)
        report = build_report(metrics, sscd.name, (clusters or {}).get("provenance"), clusters, names)
        out_dir = os.path.realpath(folder_paths.get_output_directory())
        folder = os.path.realpath(os.path.join(out_dir, os.path.dirname(filename_prefix)))
        if os.path.commonpath([out_dir, folder]) != out_dir:
            raise ValueError(f"filename_prefix must stay inside the output directory, got {filename_prefix!r}")
        path = write_report(report, folder, os.path.basename(filename_prefix) or "report")
        report["report_path"] = os.path.relpath(path, out_dir)
        raw = metrics["raw"]
        picture = render_report(train_images, list(extracted), raw["best_match"], raw["best_score"], tau_list,
                                report["verdict"])
        image = torch.from_numpy(np.asarray(picture, dtype=np.float32) / 255.0)[None]
        text = json.dumps(report, indent=1)
        short = json.dumps({"verdict": report["verdict"], "AS": raw["AS"], "A-ESR": raw["A-ESR"],
                            "copy_rate@0.75": raw["copy_rate@0.75"], "descriptor": sscd.name, "report": report["report_path"]}, indent=1)
        return io.NodeOutput(text, image, ui={**ui.PreviewImage(image, cls=cls).as_dict(), "text": (short,)})


NODES = [FineXtractExtractionMetrics]
