"""The pack loads whole or fails loudly: a node module that does not import raises out of
``get_node_list`` (ComfyUI then logs the pack as IMPORT FAILED, and the harness fails every host
test); the server lists every node of every node module; ``schema()`` refuses a misspelt field."""
import asyncio
import sys

import pytest

from finextract import host


@pytest.fixture(scope="module")
def nodes(comfyui):
    """``finextract.nodes`` imported in this process, ComfyUI as a library (CPU)."""
    host.import_comfyui(comfyui, cpu=True)
    import finextract.nodes

    return finextract.nodes


def test_a_broken_node_module_fails_the_pack(nodes, monkeypatch):
    # ``None`` in sys.modules makes the import raise ImportError, as a missing dependency would
    monkeypatch.setitem(sys.modules, f"{nodes.__name__}.broken", None)
    monkeypatch.setattr(nodes, "NODE_MODULES", (*nodes.NODE_MODULES, "broken"))
    with pytest.raises(ImportError, match="broken"):
        asyncio.run(nodes.FineXtractExtension().get_node_list())


def test_comfyui_log_of_a_failed_pack_is_recognised(tmp_path):
    # the two lines ComfyUI 0.8.0 (nodes.py) logs for a custom node whose loading raised
    for line in ("   0.4 seconds (IMPORT FAILED): /x/custom_nodes/comfyui-finextract",
                 "Error while calling comfy_entrypoint in /x/custom_nodes/comfyui-finextract: boom"):
        (tmp_path / "log").write_text(f"start\n{line}\nend\n")
        assert host.Server("", tmp_path, tmp_path / "log", None).pack_import_failed()
    (tmp_path / "log").write_text("   0.4 seconds: /x/custom_nodes/comfyui-finextract\n")
    assert not host.Server("", tmp_path, tmp_path / "log", None).pack_import_failed()


def test_the_server_lists_every_node_of_every_module(nodes, comfy):
    declared = {cls.GET_SCHEMA().node_id for cls in nodes.load_nodes()}
    listed = {name for name in comfy.object_info() if name.startswith("FineXtract")}
    assert len(declared) == 6 and listed == declared


def test_schema_refuses_an_unknown_field_and_drops_only_newer_ones(nodes):
    with pytest.raises(TypeError, match="descripton"):
        nodes.schema(node_id="X", descripton="typo")
    made = nodes.schema(node_id="X", description="d", search_aliases=["x"])
    assert made.description == "d"
