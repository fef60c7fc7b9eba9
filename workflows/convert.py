"""UI-format workflow → API-format prompt (what ``POST /prompt`` takes), as the frontend's
"Queue" does it: frontend-only nodes (notes) dropped, each real input set from its widget value
or, when a link enters it, to ``[source node id, output slot]``; companion widgets (control
after generate, upload buttons) are not inputs and are left out.

The shipped workflows exist once, in UI format (what people drag onto the canvas); their API
twins are always generated from them, never kept by hand.
"""
from __future__ import annotations

from .schema import Schemas
from .validate import validate


class WorkflowError(ValueError):
    """A workflow that does not fit its node schemas; the message lists every problem."""


def to_api(workflow: dict, schemas: Schemas) -> dict:
    """The API-format prompt of a valid UI workflow; raises :class:`WorkflowError` otherwise."""
    errors = validate(workflow, schemas)
    if errors:
        raise WorkflowError("workflow does not fit its node schemas:\n  " + "\n  ".join(errors))
    links = {link[0]: link for link in workflow["links"]}
    prompt = {}
    for node in sorted(workflow["nodes"], key=lambda n: n["id"]):
        schema = schemas.get(node["type"])
        if schema.frontend_only:
            continue
        inputs = {slot.input.name: value
                  for slot, value in zip(schema.widget_slots(), node.get("widgets_values", []))
                  if slot.role == "value"}
        for socket in node.get("inputs", []):
            if socket.get("link") is not None:
                _, src, src_slot, *_ = links[socket["link"]]
                inputs[socket["name"]] = [str(src), src_slot]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs,
                                   "_meta": {"title": node.get("title") or node["type"]}}
    return prompt


def node_by_title(prompt: dict, title: str) -> dict:
    """The one API node titled ``title`` (titles are how tests and the CLI address a shipped
    workflow's nodes, since ids are layout accidents)."""
    found = [n for n in prompt.values() if n["_meta"]["title"] == title]
    if len(found) != 1:
        raise KeyError(f"{len(found)} nodes titled {title!r}; titles: "
                       f"{sorted(n['_meta']['title'] for n in prompt.values())}")
    return found[0]
