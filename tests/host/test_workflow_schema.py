"""The committed node-schema snapshot matches what a live ComfyUI with this pack declares.

If this fails, ComfyUI or one of our nodes changed its inputs: regenerate with
``python -m finextract.workflows.refresh`` and re-run the workflow tests
(a changed widget order breaks every saved workflow)."""
import difflib

from finextract.workflows.refresh import probed_comfyui, render, snapshot_from
from finextract.workflows.schema import SNAPSHOT_PATH


def test_snapshot_is_current(comfyui):
    with probed_comfyui(comfyui) as server:
        live = render(snapshot_from(server))
    committed = SNAPSHOT_PATH.read_text()
    diff = "".join(difflib.unified_diff(committed.splitlines(True), live.splitlines(True),
                                        "committed", "live", n=1))
    assert live == committed, f"stale {SNAPSHOT_PATH.name}; diff:\n{diff[:6000]}"
