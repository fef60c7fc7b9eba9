"""comfyui-finextract: audit fine-tuned diffusion checkpoints for training-data leakage
(FineXtract, Wu, Zhang & Wu, ICML 2025).

Cloned into ``ComfyUI/custom_nodes/`` this folder is a ComfyUI node pack; installed with pip it is
the ``finextract`` package (core + CLI). Importing it never imports ComfyUI: the host is touched
only when ComfyUI calls :func:`comfy_entrypoint`.
"""
__version__ = "0.1.0"


async def comfy_entrypoint():
    """ComfyUI's V3 entry point: returns the pack's extension (nodes are listed in ``nodes/``)."""
    from .nodes import FineXtractExtension

    return FineXtractExtension()
