"""FineXtract clustering and scoring, host-agnostic: SSCD descriptors, the similarity graph and its
threshold search (paper §4.3), the metrics of Eq. 1–2 and the audit report. No ComfyUI import."""
from .descriptors import (INSTALL_HINT, TORCHSCRIPT_NAME, Descriptor, DescriptorError, centre, find_torchscript,
                          load_descriptor, load_distilled, preprocess, to_pil)
from .images import IMAGE_SUFFIXES, ImageFileError, image_files, image_problems, read_image, read_images
from .extraction import Extraction, dense_candidates, embed_in_chunks, extract
from .metrics import (DEFAULT_TAUS, SSCD_COPY_THRESHOLD, average_similarity, best_matches, evaluate,
                      extraction_success_rate, similarity_matrix)
from .report import build_report, render_report, write_report
from .threshold_search import MODES, ClusterResult, cluster

__all__ = [
    "IMAGE_SUFFIXES", "ImageFileError", "image_files", "image_problems", "read_image", "read_images",
    "INSTALL_HINT", "TORCHSCRIPT_NAME", "Descriptor", "DescriptorError", "centre", "find_torchscript",
    "load_descriptor", "load_distilled", "preprocess", "to_pil",
    "Extraction", "dense_candidates", "embed_in_chunks", "extract",
    "DEFAULT_TAUS", "SSCD_COPY_THRESHOLD", "average_similarity", "best_matches", "evaluate",
    "extraction_success_rate", "similarity_matrix",
    "build_report", "render_report", "write_report",
    "MODES", "ClusterResult", "cluster",
]
