"""FineXtract clustering and scoring, host-agnostic: SSCD descriptors, the similarity graph and its
threshold search (paper §4.3), the metrics of Eq. 1–2 and the audit report. No ComfyUI import."""
from .descriptors import (IMAGE_SUFFIXES, INSTALL_HINT, TORCHSCRIPT_NAME, Descriptor, DescriptorError, centre,
                          find_torchscript, image_files, load_descriptor, load_distilled, preprocess,
                          to_pil)
from .extraction import Extraction, dense_candidates, embed_in_chunks, extract
from .metrics import (DEFAULT_TAUS, SSCD_COPY_THRESHOLD, average_similarity, best_matches, evaluate,
                      extraction_success_rate, similarity_matrix)
from .report import build_report, render_report, write_report
from .threshold_search import MODES, ClusterResult, cluster

__all__ = [
    "IMAGE_SUFFIXES", "INSTALL_HINT", "TORCHSCRIPT_NAME", "image_files", "Descriptor", "DescriptorError", "centre", "find_torchscript",
    "load_descriptor", "load_distilled", "preprocess", "to_pil",
    "Extraction", "dense_candidates", "embed_in_chunks", "extract",
    "DEFAULT_TAUS", "SSCD_COPY_THRESHOLD", "average_similarity", "best_matches", "evaluate",
    "extraction_success_rate", "similarity_matrix",
    "build_report", "render_report", "write_report",
    "MODES", "ClusterResult", "cluster",
]
