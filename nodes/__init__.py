"""The ComfyUI glue: with :mod:`..host` the only code that imports ComfyUI. Each module declares V3
nodes in a ``NODES`` list; the extension below collects them."""
from __future__ import annotations

import dataclasses
import importlib

from comfy_api.v0_0_2 import ComfyExtension, io

NODE_MODULES = ("loader", "guider", "sampler", "sscd_cluster", "extraction_metrics", "caption")
"""Modules of this package that define nodes; each exports ``NODES``."""

_SCHEMA_FIELDS = frozenset(f.name for f in dataclasses.fields(io.Schema))
NEWER_SCHEMA_FIELDS = frozenset({"search_aliases"})
"""Schema fields of ComfyUI releases after 0.8.0 that the nodes declare for those hosts and that an
older ``io.Schema`` does not take; dropped by name where the host lacks them."""


def schema(**fields) -> io.Schema:
    """``io.Schema(**fields)`` minus the fields of :data:`NEWER_SCHEMA_FIELDS` this ComfyUI does
    not know. Any other unknown field (a typo) raises, as ``io.Schema`` itself would."""
    unknown = set(fields) - _SCHEMA_FIELDS - NEWER_SCHEMA_FIELDS
    if unknown:
        raise TypeError(f"io.Schema has no field(s) {sorted(unknown)}")
    return io.Schema(**{k: v for k, v in fields.items() if k in _SCHEMA_FIELDS})


def load_nodes(modules=None) -> list:
    """The ``NODES`` of each module. A module that fails to import raises: a node must never
    silently disappear from ComfyUI (optional dependencies are handled inside the modules, where
    they are used, with a message saying what to install)."""
    nodes = []
    for name in NODE_MODULES if modules is None else modules:
        nodes.extend(importlib.import_module(f".{name}", __name__).NODES)
    return nodes


class FineXtractExtension(ComfyExtension):
    async def get_node_list(self):
        # ComfyUI (0.8) calls this once at startup, right after comfy_entrypoint() and before any
        # prompt runs (it never calls ``on_load``): the moment to teach it the miniature family,
        # so stock loaders (CheckpointLoaderSimple, ...) and ours read its checkpoints.
        from .bundled import register_bundled_weights
        from .mini_family import register

        register()
        register_bundled_weights()
        return load_nodes()
