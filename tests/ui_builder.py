"""Test fixture: write UI-format (0.4) workflows from node schemas (inputs by name, positional
``widgets_values``, sockets and links laid out as the frontend saves them), for small workflows,
sound or deliberately broken. The shipped workflows are edited and saved from the canvas."""
from __future__ import annotations

from finextract.workflows.schema import Schemas

NODE_WIDTH = 320
ROW_HEIGHT = 24


class UIBuilder:
    def __init__(self, schemas: Schemas):
        self.schemas = schemas
        self.nodes: list[dict] = []
        self.links: list[list] = []

    def _node(self, node_id: int) -> dict:
        return next(n for n in self.nodes if n["id"] == node_id)

    def add(self, node_type: str, pos=(0, 0), title: str | None = None, **inputs) -> int:
        """Add a node. Keyword inputs are widget values by input name, or ``(node_id, output)``
        links (output by index or name). Widgets left out get the schema default; seeds are
        saved with control "fixed" so a shared workflow reproduces its run."""
        schema = self.schemas.get(node_type)
        if schema is None:
            raise KeyError(f"unknown node type {node_type!r}")
        unknown = set(inputs) - {i.name for i in schema.inputs}
        if unknown:
            raise KeyError(f"{node_type} has no inputs {sorted(unknown)}")
        node_id = len(self.nodes) + 1
        values, sockets, pending = [], [], []
        for slot in schema.widget_slots():
            given = inputs.get(slot.input.name)
            if slot.role == "control":
                values.append("fixed")
            elif slot.role == "upload":
                values.append("image")
            elif slot.role == "extension":
                values.append(None)
            elif given is None or isinstance(given, tuple):
                options = slot.input.options
                values.append(slot.input.opts.get("default", options[0] if options else ""))
            else:
                values.append(given)
        for spec in schema.inputs:
            socket = {"name": spec.name, "type": spec.type, "link": None}
            if spec.is_widget:
                socket["widget"] = {"name": spec.name}
            if isinstance(inputs.get(spec.name), tuple):
                pending.append((len(sockets), inputs[spec.name]))
            if not spec.is_widget or isinstance(inputs.get(spec.name), tuple):
                sockets.append(socket)
        outputs = [{"name": name, "type": kind, "links": []}
                   for name, kind in zip(schema.output_names or schema.outputs, schema.outputs)]
        rows = max(len(sockets), len(outputs)) + len(values)
        node = {"id": node_id, "type": node_type, "pos": list(pos),
                "size": [NODE_WIDTH, 46 + ROW_HEIGHT * rows], "flags": {}, "order": node_id - 1,
                "mode": 0, "inputs": sockets, "outputs": outputs,
                "properties": {"Node name for S&R": node_type}, "widgets_values": values}
        if title:
            node["title"] = title
        self.nodes.append(node)
        for slot_index, (src, output) in pending:
            self.connect(src, output, node_id, slot_index)
        return node_id

    def connect(self, src: int, output, dst: int, dst_slot: int) -> int:
        source = self._node(src)
        schema = self.schemas.get(source["type"])
        index = output if isinstance(output, int) else \
            list(schema.output_names or schema.outputs).index(output)
        link_id = len(self.links) + 1
        link_type = schema.outputs[index]
        self.links.append([link_id, src, index, dst, dst_slot, link_type])
        source["outputs"][index]["links"].append(link_id)
        self._node(dst)["inputs"][dst_slot]["link"] = link_id
        return link_id

    def note(self, text: str, pos=(0, 0), size=(360, 160), title: str | None = None) -> int:
        node_id = self.add("Note", pos=pos, title=title, text=text)
        node = self._node(node_id)
        node["size"] = list(size)
        node["color"], node["bgcolor"] = "#432", "#653"
        return node_id

    def workflow(self) -> dict:
        return {"last_node_id": len(self.nodes), "last_link_id": len(self.links),
                "nodes": self.nodes, "links": self.links, "groups": [], "config": {},
                "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}}, "version": 0.4}
