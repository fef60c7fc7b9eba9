"""Check a UI-format (0.4) workflow against node schemas without running ComfyUI.

What a user meets when a shared workflow is wrong: a node type that does not exist (the
"missing nodes" dialog), a widget value the server rejects at ``/prompt`` (out of range, not
one of the combo's choices, wrong type), a link between sockets of different types, or a
required input left unconnected. :func:`validate` finds all of these from the JSON and the
schemas alone, so CI catches them without a ComfyUI.
"""
from __future__ import annotations

import math

from .schema import CONTROL_VALUES, InputSpec, NodeSchema, Schemas, WidgetSlot


def _label(node: dict) -> str:
    title = node.get("title")
    return f"node {node.get('id')} ({node.get('type')}{', ' + repr(title) if title else ''})"


def check_value(spec: InputSpec, value) -> str | None:
    """Why ``value`` does not fit the widget input ``spec``; None when it fits."""
    kind = spec.type
    if kind == "INT":
        if isinstance(value, bool) or not isinstance(value, int):
            return f"{spec.name}: {value!r} is not an integer"
    elif kind == "FLOAT":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return f"{spec.name}: {value!r} is not a finite number"
    elif kind == "STRING":
        if not isinstance(value, str):
            return f"{spec.name}: {value!r} is not a string"
    elif kind == "BOOLEAN":
        if not isinstance(value, bool):
            return f"{spec.name}: {value!r} is not a boolean"
    elif kind == "COMBO":
        if spec.options is None:
            return None if isinstance(value, str) and value else \
                f"{spec.name}: {value!r} is not a file name"
        if value not in spec.options:
            return f"{spec.name}: {value!r} is not one of {list(spec.options)[:12]}"
    if kind in ("INT", "FLOAT"):
        low, high = spec.opts.get("min"), spec.opts.get("max")
        if low is not None and value < low or high is not None and value > high:
            return f"{spec.name}: {value!r} outside [{low}, {high}]"
    return None


def _check_slot(slot: WidgetSlot, value) -> str | None:
    if slot.role == "control":
        return None if value in CONTROL_VALUES else \
            f"{slot.input.name}: control value {value!r} is not one of {list(CONTROL_VALUES)}"
    if slot.role == "extension":
        return None if value is None or isinstance(value, bool) else \
            f"{slot.input.name}: frontend widget holds {value!r}"
    if slot.role == "upload":
        return None if isinstance(value, str) else f"{slot.input.name}: upload widget value {value!r}"
    return check_value(slot.input, value)


def accepts(input_type: str, link_type: str) -> bool:
    """Does an input declared ``input_type`` take a link carrying ``link_type``? ComfyUI allows
    ``*`` on either side and comma-separated unions on the input."""
    if "*" in (input_type, link_type):
        return True
    return link_type in input_type.split(",")


def _check_widgets(node: dict, schema: NodeSchema) -> list[str]:
    slots = schema.widget_slots()
    values = node.get("widgets_values", [])
    if not isinstance(values, list):
        return [f"{_label(node)}: widgets_values must be a list, got {type(values).__name__}"]
    if len(values) != len(slots):
        names = [s.input.name + ("" if s.role == "value" else f"({s.role})") for s in slots]
        return [f"{_label(node)}: {len(values)} widget values for {len(slots)} widgets {names}"]
    errors = []
    for slot, value in zip(slots, values):
        problem = _check_slot(slot, value)
        if problem:
            errors.append(f"{_label(node)}: {problem}")
    return errors


def _check_sockets(node: dict, schema: NodeSchema) -> list[str]:
    errors = []
    for socket in node.get("inputs", []):
        spec = schema.input(socket.get("name"))
        if spec is None:
            errors.append(f"{_label(node)}: input {socket.get('name')!r} is not declared")
        elif not spec.is_widget and socket.get("link") is None and not spec.optional:
            errors.append(f"{_label(node)}: required input {spec.name!r} is not connected")
    names = {s.get("name") for s in node.get("inputs", [])}
    for spec in schema.inputs:
        if not spec.is_widget and not spec.optional and spec.name not in names:
            errors.append(f"{_label(node)}: required input {spec.name!r} has no socket")
    if len(node.get("outputs", [])) > len(schema.outputs):
        errors.append(f"{_label(node)}: {len(node['outputs'])} outputs, schema declares {len(schema.outputs)}")
    return errors


def _check_link(link: list, nodes: dict, schemas: dict) -> list[str]:
    if not isinstance(link, list) or len(link) != 6:
        return [f"link {link!r}: expected [id, src, src_slot, dst, dst_slot, type]"]
    link_id, src, src_slot, dst, dst_slot, link_type = link
    if src not in nodes or dst not in nodes:
        return [f"link {link_id}: joins missing node {src if src not in nodes else dst}"]
    src_schema, dst_schema = schemas.get(src), schemas.get(dst)
    if src_schema is None or dst_schema is None:
        return []  # the unknown node type is reported already
    errors = []
    if not 0 <= src_slot < len(src_schema.outputs):
        return [f"link {link_id}: {_label(nodes[src])} has no output {src_slot}"]
    out_type = src_schema.outputs[src_slot]
    if link_type != out_type and out_type != "*":
        errors.append(f"link {link_id}: carries {link_type}, but {_label(nodes[src])} output {src_slot} is {out_type}")
    sockets = nodes[dst].get("inputs", [])
    if not 0 <= dst_slot < len(sockets):
        return errors + [f"link {link_id}: {_label(nodes[dst])} has no input slot {dst_slot}"]
    socket = sockets[dst_slot]
    if socket.get("link") != link_id:
        errors.append(f"link {link_id}: {_label(nodes[dst])} input {socket.get('name')!r} names link {socket.get('link')}")
    spec = dst_schema.input(socket.get("name"))
    if spec is not None and not accepts(spec.type, out_type):
        errors.append(f"link {link_id}: {out_type} into {_label(nodes[dst])} input {spec.name!r} of type {spec.type}")
    outs = nodes[src].get("outputs", [])
    if src_slot < len(outs) and link_id not in (outs[src_slot].get("links") or []):
        errors.append(f"link {link_id}: not listed in {_label(nodes[src])} output {src_slot} links")
    return errors


def validate(workflow: dict, schemas: Schemas) -> list[str]:
    """Every problem found in ``workflow`` (empty when it is sound)."""
    if not isinstance(workflow.get("nodes"), list) or not isinstance(workflow.get("links"), list):
        return ["not a UI-format workflow: needs 'nodes' and 'links' lists"]
    errors, nodes, node_schemas = [], {}, {}
    for node in workflow["nodes"]:
        if node.get("id") in nodes:
            errors.append(f"{_label(node)}: duplicate node id")
        nodes[node.get("id")] = node
        schema = schemas.get(node.get("type"))
        if schema is None:
            errors.append(f"{_label(node)}: unknown node type {node.get('type')!r}")
            continue
        if node.get("mode", 0) != 0:
            errors.append(f"{_label(node)}: muted or bypassed nodes are not allowed in shipped workflows")
        node_schemas[node["id"]] = schema
        errors += _check_widgets(node, schema)
        errors += _check_sockets(node, schema)
    link_ids = set()
    for link in workflow["links"]:
        if isinstance(link, list) and link:
            if link[0] in link_ids:
                errors.append(f"link {link[0]}: duplicate link id")
            link_ids.add(link[0])
        errors += _check_link(link, nodes, node_schemas)
    for node in workflow["nodes"]:
        for socket in node.get("inputs", []):
            if socket.get("link") is not None and socket["link"] not in link_ids:
                errors.append(f"{_label(node)}: input {socket.get('name')!r} names missing link {socket['link']}")
    return errors
