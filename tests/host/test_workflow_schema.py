"""The committed node-schema snapshot matches what a live ComfyUI with this pack declares.

If this fails, ComfyUI or one of our nodes changed its inputs: regenerate with
``python -m finextract.workflows.refresh --comfyui $COMFYUI_PATH`` and re-run the workflow tests
(a changed widget order breaks every saved workflow)."""
import difflib
import os
import pathlib
import sys

import pytest

from finextract.workflows.refresh import probed_comfyui, render, snapshot_from
from finextract.workflows.schema import SNAPSHOT_PATH


def test_snapshot_is_current():
    comfyui = os.environ.get("COMFYUI_PATH")
    if not comfyui:
        pytest.skip("COMFYUI_PATH is unset: the snapshot is checked against a live ComfyUI")
    with probed_comfyui(pathlib.Path(comfyui), os.environ.get("COMFYUI_PYTHON", sys.executable)) as url:
        live = render(snapshot_from(url))
    committed = SNAPSHOT_PATH.read_text()
    diff = "".join(difflib.unified_diff(committed.splitlines(True), live.splitlines(True),
                                        "committed", "live", n=1))
    assert live == committed, f"stale {SNAPSHOT_PATH.name}; diff:\n{diff[:6000]}"
