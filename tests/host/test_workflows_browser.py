"""Every shipped workflow loaded onto the real frontend's canvas, in headless Chromium.

ComfyUI (``comfy`` fixture, pack loaded) serves its frontend package; Playwright drives Debian's
``chromium`` (``--no-sandbox --disable-background-networking``). Per workflow: no missing-node
dialog, every node type registered, no console error or page error while loading (network
failures to hosts other than 127.0.0.1 excepted: this machine has no network, and the frontend
asks api.comfy.org about releases), the widget values read back unchanged (so our positional
layout is the frontend's), the frontend's own ``graphToPrompt`` equals our converter's API
prompt, and a screenshot lands in ``tests/artifacts/browser/<workflow>.png``.
"""
import json
import os
import pathlib
import urllib.parse
import urllib.request

import pytest

from finextract.workflows.convert import to_api
from finextract.workflows.refresh import shipped_workflows
from finextract.workflows.schema import Schemas

CHROMIUM = os.environ.get("FINEXTRACT_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = pathlib.Path(__file__).resolve().parents[1] / "artifacts" / "browser"


@pytest.fixture(scope="module")
def page(comfy):
    if not pathlib.Path(CHROMIUM).exists():
        pytest.skip(f"no chromium at {CHROMIUM} (apt-get install chromium)")
    playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed")
    # A fresh user directory opens the template browser on first visit: mark the tour done; and
    # keep text drawn when a whole workflow is zoomed out to fit the screenshot.
    settings = {"Comfy.TutorialCompleted": True, "LiteGraph.Canvas.MinFontSizeForLOD": 0,
                "Comfy.Minimap.Visible": False}
    request = urllib.request.Request(comfy.url + "/settings", method="POST", data=json.dumps(settings).encode())
    urllib.request.urlopen(request, timeout=30).close()
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1920, "height": 1080})
        page.events = []
        page.on("console", lambda m: page.events.append(("console", m.type, m.text)))
        page.on("pageerror", lambda e: page.events.append(("pageerror", "error", str(e))))
        page.on("requestfailed", lambda r: page.events.append(("requestfailed", r.url, r.failure)))
        page.set_default_timeout(180_000)  # a loaded 2-core machine takes minutes to serve the app
        page.goto(comfy.url)
        page.wait_for_function("window.app && window.app.graph && window.app.canvas", timeout=180_000)
        yield page
        browser.close()


def _problems(events) -> list:
    external = [e for e in events if e[0] == "requestfailed"
                and urllib.parse.urlparse(e[1]).hostname not in ("127.0.0.1", "localhost")]
    problems = [e for e in events if e[0] == "pageerror" or e[0] == "console" and e[1] == "error"]
    if len(external) == len([e for e in events if e[0] == "requestfailed"]):
        # Chromium logs each refused request as a console error; allowed for external hosts only.
        problems = [e for e in problems if "net::ERR_NAME_NOT_RESOLVED" not in e[2]]
    return problems


@pytest.mark.parametrize("name", sorted(shipped_workflows()))
def test_workflow_loads_on_the_canvas(page, name):
    workflow = shipped_workflows()[name]
    page.events.clear()
    page.evaluate("async (wf) => { await window.app.loadGraphData(wf); }", workflow)
    page.wait_for_timeout(1500)
    dialogs = page.evaluate("Array.from(document.querySelectorAll('.p-dialog')).map(d => d.innerText)")
    assert not dialogs, f"dialog after loading {name}: {dialogs}\n{page.events}"
    loaded = page.evaluate("""() => window.app.graph.nodes.map(n => ({id: n.id, type: n.type,
        registered: !!LiteGraph.registered_node_types[n.type]}))""")
    assert sorted(n["id"] for n in loaded) == sorted(n["id"] for n in workflow["nodes"])
    assert all(n["registered"] for n in loaded), loaded
    saved = page.evaluate("() => window.app.graph.serialize().nodes.map(n => [n.id, n.widgets_values ?? []])")
    assert dict(map(tuple, saved)) == {n["id"]: n.get("widgets_values", []) for n in workflow["nodes"]}
    prompt = page.evaluate("async () => (await window.app.graphToPrompt()).output")
    schemas = Schemas.snapshot()
    declared = {k: {i.name for i in schemas.get(v["class_type"]).inputs} for k, v in prompt.items()}
    # frontend extensions may send extra keys of their own widgets (PreviewAny's 'preview'); the
    # server reads declared inputs only, so those are what must agree
    assert {k: (v["class_type"], {i: x for i, x in v["inputs"].items() if i in declared[k]})
            for k, v in prompt.items()} == {k: (v["class_type"], v["inputs"]) for k, v in to_api(workflow, schemas).items()}
    page.evaluate("""() => {
        const nodes = window.app.graph.nodes;
        const x0 = Math.min(...nodes.map(n => n.pos[0])), y0 = Math.min(...nodes.map(n => n.pos[1] - 30));
        const x1 = Math.max(...nodes.map(n => n.pos[0] + n.size[0])), y1 = Math.max(...nodes.map(n => n.pos[1] + n.size[1]));
        const pad = 0.06 * Math.max(x1 - x0, y1 - y0);  // clear of the side bar and top menu
        window.app.canvas.ds.fitToBounds([x0 - 2 * pad, y0 - pad, x1 - x0 + 3 * pad, y1 - y0 + 2 * pad], {zoom: 0.9});
        window.app.canvas.setDirty(true, true);
    }""")
    page.wait_for_timeout(800)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))
    assert _problems(page.events) == [], page.events
