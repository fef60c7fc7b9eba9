"""FineXtract clustering and scoring, host-agnostic: SSCD descriptors, the similarity graph and its
threshold search (paper §4.3), the metrics of Eq. 1–2 and the audit report. No ComfyUI import."""
