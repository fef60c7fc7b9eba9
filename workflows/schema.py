"""Node schemas as ComfyUI's ``/object_info`` declares them, and the widget layout its frontend
derives from them.

A UI-format workflow stores widget values *positionally* (``widgets_values``), so reading one
means redoing what the frontend (comfyui-frontend-package 1.35) does when it builds a node:
every input of a widget type (INT, FLOAT, STRING, BOOLEAN, COMBO) that is not ``forceInput``
gets a widget, in the node's input order (required, then optional); some widgets bring a
companion whose value is saved right after theirs:

- INT inputs with ``control_after_generate`` (and, when the flag is absent, inputs named
  ``seed`` or ``noise_seed``) and FLOAT/COMBO inputs with the flag: a "control after generate"
  combo (fixed / increment / decrement / randomize);
- COMBO inputs with ``image_upload`` / ``video_upload``: an upload button whose saved value is
  the literal ``"image"``.
Neither companion is sent to the server: only real inputs reach ``/prompt``.

Frontend extensions may add widgets of their own after the declared ones
(:data:`EXTENSION_WIDGETS`); their saved values are the frontend's business (``null`` here).

The snapshot (``workflows/schema/object_info.json``) keeps the entries of the node types our
workflows use, taken from a real ComfyUI by :func:`build_snapshot`. Combos that list files
(checkpoints, LoRAs, input images) depend on the machine, so the snapshot marks them
``dynamic_options`` instead of storing one machine's listing.
"""
from __future__ import annotations

import json
import pathlib
from dataclasses import dataclass, field

SNAPSHOT_PATH = pathlib.Path(__file__).resolve().parent / "schema" / "object_info.json"

WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
CONTROL_VALUES = ("fixed", "increment", "decrement", "randomize")
UPLOAD_FLAGS = ("image_upload", "video_upload")

FRONTEND_ONLY = {
    # Node types that exist only in the frontend: never sent to /prompt, not in /object_info.
    "Note": {"input": {"required": {"text": ["STRING", {"multiline": True}]}},
             "input_order": {"required": ["text"]}, "output": [], "output_name": []},
    "MarkdownNote": {"input": {"required": {"text": ["STRING", {"multiline": True}]}},
                     "input_order": {"required": ["text"]}, "output": [], "output_name": []},
}

EXTENSION_WIDGETS = {
    # Comfy.PreviewAny (core "Preview as Text"): markdown and plain previews, a previewMode toggle;
    # the previews are never saved and the toggle reloads as null, so all three are stored null.
    "PreviewAny": ("preview", "preview", "previewMode"),
}

PROBE_NAME = "zz-finextract-probe"
"""File/folder name :func:`build_snapshot` plants in every model and input folder, so that a combo
listing it is recognised as a file listing."""


@dataclass(frozen=True)
class InputSpec:
    """One declared input. ``options`` is the combo's static choices, or None when they are a
    listing of files that differs per machine."""
    name: str
    type: str
    opts: dict = field(default_factory=dict)
    options: tuple | None = None
    optional: bool = False

    @property
    def is_widget(self) -> bool:
        return self.type in WIDGET_TYPES and not self.opts.get("forceInput")

    @property
    def has_control(self) -> bool:
        """Does the frontend add a control-after-generate companion widget?"""
        flag = self.opts.get("control_after_generate")
        if self.type == "INT":
            return bool(flag) if flag is not None else self.name in ("seed", "noise_seed")
        return self.type in ("FLOAT", "COMBO") and bool(flag)

    @property
    def has_upload(self) -> bool:
        return self.type == "COMBO" and any(self.opts.get(f) for f in UPLOAD_FLAGS)


@dataclass(frozen=True)
class WidgetSlot:
    """One position of ``widgets_values``: the input it belongs to and its role
    (``value``, ``control``, ``upload`` or ``extension``)."""
    input: InputSpec
    role: str = "value"


@dataclass(frozen=True)
class NodeSchema:
    type: str
    inputs: tuple[InputSpec, ...]
    outputs: tuple[str, ...]
    output_names: tuple[str, ...]
    frontend_only: bool = False

    def input(self, name: str) -> InputSpec | None:
        return next((i for i in self.inputs if i.name == name), None)

    def widget_slots(self) -> list[WidgetSlot]:
        """The layout of ``widgets_values``, as the frontend builds it."""
        slots = []
        for spec in self.inputs:
            if not spec.is_widget:
                continue
            slots.append(WidgetSlot(spec))
            if spec.has_control:
                slots.append(WidgetSlot(spec, "control"))
            if spec.has_upload:
                slots.append(WidgetSlot(spec, "upload"))
        for name in EXTENSION_WIDGETS.get(self.type, ()):
            slots.append(WidgetSlot(InputSpec(name, "EXTENSION"), "extension"))
        return slots


def parse_input(name: str, raw: list, optional: bool) -> InputSpec:
    """One ``/object_info`` input entry: ``[TYPE, opts]``, ``[[choices], opts]`` (V1 combo) or
    ``["COMBO", {"options": [...]}]`` (V3 combo)."""
    kind, opts = raw[0], (raw[1] if len(raw) > 1 and isinstance(raw[1], dict) else {})
    if isinstance(kind, list):
        kind, opts = "COMBO", {**opts, "options": kind}
    options = None
    if kind == "COMBO" and not opts.get("dynamic_options"):
        options = tuple(opts.get("options", ()))
    return InputSpec(name, kind, opts, options, optional)


def parse_node(node_type: str, entry: dict, frontend_only: bool = False) -> NodeSchema:
    declared = entry.get("input", {})
    order = entry.get("input_order") or {k: list(v) for k, v in declared.items()}
    inputs = []
    for section in ("required", "optional"):
        for name in order.get(section, []):
            inputs.append(parse_input(name, declared[section][name], section == "optional"))
    return NodeSchema(node_type, tuple(inputs), tuple(entry.get("output", [])),
                      tuple(entry.get("output_name", [])), frontend_only)


class Schemas:
    """Schemas of a set of node types (a snapshot, or a live ``/object_info``)."""

    def __init__(self, object_info: dict):
        self.object_info = object_info

    def get(self, node_type: str) -> NodeSchema | None:
        if node_type in FRONTEND_ONLY:
            return parse_node(node_type, FRONTEND_ONLY[node_type], frontend_only=True)
        entry = self.object_info.get(node_type)
        return None if entry is None else parse_node(node_type, entry)

    @classmethod
    def snapshot(cls, path: pathlib.Path = SNAPSHOT_PATH) -> "Schemas":
        return cls(json.loads(pathlib.Path(path).read_text())["nodes"])


def _mark_dynamic(entry: dict) -> dict:
    """Replace every combo that lists the probe file by a ``dynamic_options`` marker."""
    entry = json.loads(json.dumps(entry))
    for section in entry.get("input", {}).values():
        if not isinstance(section, dict):
            continue
        for name, raw in section.items():
            if not isinstance(raw, list) or not raw:
                continue
            spec = parse_input(name, raw, False)
            if spec.type == "COMBO" and any(PROBE_NAME in str(o) for o in spec.options or ()):
                opts = {k: v for k, v in spec.opts.items() if k != "options"}
                section[name] = ["COMBO", {**opts, "dynamic_options": True}]
    return entry


def build_snapshot(object_info: dict, node_types, comfyui_version: str) -> dict:
    """The snapshot document for ``node_types`` out of a live ``/object_info``.

    The server must have been started with :data:`PROBE_NAME` files in its model and input
    folders (see ``python -m finextract.workflows.refresh``); frontend-only types are skipped.
    """
    missing = sorted(t for t in node_types if t not in object_info and t not in FRONTEND_ONLY)
    if missing:
        raise KeyError(f"node types not served by this ComfyUI: {', '.join(missing)}")
    nodes = {t: _mark_dynamic(object_info[t]) for t in sorted(node_types) if t in object_info}
    return {"comfyui_version": comfyui_version,
            "note": "Generated by `python -m finextract.workflows.refresh`; do not edit by hand.",
            "nodes": nodes}
