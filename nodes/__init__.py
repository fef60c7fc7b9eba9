"""The ComfyUI glue: the only package that imports ComfyUI. Each module declares V3 nodes in a
``NODES`` list; the extension below collects them."""
from __future__ import annotations

import dataclasses
import importlib
import logging

from comfy_api.v0_0_2 import ComfyExtension, io

NODE_MODULES = ("loader", "guider", "sampler", "sscd_cluster", "extraction_metrics", "caption")
"""Modules of this package that define nodes; each exports ``NODES``."""


_SCHEMA_FIELDS = frozenset(f.name for f in dataclasses.fields(io.Schema))


def schema(**fields) -> io.Schema:
    """``io.Schema`` without the fields this ComfyUI does not know: ``search_aliases`` is declared
    for newer hosts but ComfyUI 0.8.0's Schema has no such field and would refuse the node."""
    return io.Schema(**{k: v for k, v in fields.items() if k in _SCHEMA_FIELDS})


class FineXtractExtension(ComfyExtension):
    async def get_node_list(self):
        # ComfyUI (0.8) calls this once at startup, right after comfy_entrypoint() and before any
        # prompt runs (it never calls ``on_load``): the moment to teach it the miniature family,
        # so stock loaders (CheckpointLoaderSimple, ...) and ours read its checkpoints.
        try:
            from .mini_family import register

            register()
        except (ImportError, AttributeError) as exc:  # a ComfyUI whose internals moved: SD models still work
            logging.warning("finextract: miniature model family not registered: %s", exc)
        from .bundled import register_bundled_weights

        register_bundled_weights()
        nodes = []
        for name in NODE_MODULES:
            try:
                module = importlib.import_module(f".{name}", __name__)
            except ImportError as exc:  # one missing optional dependency never hides the pack
                logging.warning("finextract: nodes of %s not loaded: %s", name, exc)
                continue
            nodes.extend(module.NODES)
        return nodes
