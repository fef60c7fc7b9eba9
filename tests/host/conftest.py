"""Real-host test harness: a real ComfyUI process on 127.0.0.1, driven over HTTP.

ComfyUI is :func:`finextract.host.comfyui_path`: ``COMFYUI_PATH``, else ``../shared/comfyui``
beside the checkout. Where there is none, every test here skips saying so; where there is one,
nothing skips (``make test`` installs what the tier needs: ``tests/host/setup_env.py``).

Fixtures (all session-scoped):

- ``comfy_models``: a folder of model files built with ComfyUI's own classes by
  ``tests/host/sd15_models.py`` (random weights, SD1.5 architecture; see its docstring). Cached
  between sessions, so it is built once (~40 s). Attributes:
  ``root``, ``checkpoints`` (role → file name: ``base``, ``finetuned``, ``other_family``,
  ``corrupt``, ``resaved``: the base's tensors under new metadata, ``unet_finetuned``: the UNet
  moved, the text encoder not), ``families`` (role → ComfyUI model class), ``loras`` (format →
  file name: ``kohya``, ``diffusers``, ``peft``, ``nomatch``, ``zero``: 4 layers each, ``zero``
  with all up weights 0; ``attention``: every transformer linear layer, rank 16).
- ``comfy``: a :class:`ComfyClient` bound to a ComfyUI started by :func:`finextract.host.server`
  (``main.py --cpu`` on a free port of 8190-8199, a temporary base directory, this checkout as its
  only custom node pack, ``checkpoints``/``loras`` pointing at ``comfy_models``), under
  ``$COMFYUI_PYTHON`` (default: the interpreter running the tests).

Usage in a test::

    def test_x(comfy, comfy_models):
        result = comfy.run(graph)              # raises HostError with ComfyUI's message on failure
        error = comfy.run_expect_error(graph)  # returns the error text; fails if the run succeeded
        comfy.object_info()["FineXtractGuider"]
        comfy.view(image_dict)                 # bytes of an output file
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import pathlib
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pytest

from finextract import host

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _load_sibling(name: str):
    """A module of this folder (conftest modules are not importable by name under importlib mode)."""
    spec = importlib.util.spec_from_file_location(f"finextract_tests_host_{name}", pathlib.Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sd15_models = _load_sibling("sd15_models")
family_builder = _load_sibling("family_models")
graphs = _load_sibling("guidance_graphs")
prompts = _load_sibling("workflow_prompts")
if "COMFYUI_PATH" not in os.environ and host.comfyui_path() is not None:
    # what host.comfyui_path() found, for the tests and subprocesses that read the variable
    os.environ["COMFYUI_PATH"] = str(host.comfyui_path())


class HostError(AssertionError):
    """A prompt ComfyUI refused or failed; ``message`` is ComfyUI's own text."""

    def __init__(self, message: str, details=None):
        super().__init__(message)
        self.message = message
        self.details = details


def comfyui_path() -> pathlib.Path:
    try:
        path = host.comfyui_path()
    except host.HostError as exc:
        pytest.fail(str(exc))
    if path is None:
        pytest.skip("no ComfyUI: set COMFYUI_PATH or put ComfyUI 0.8.0 in ../shared/comfyui")
    return path


class ComfyClient:
    """The few HTTP calls the tests need: /prompt, /history, /object_info, /view, /interrupt."""

    def __init__(self, url: str, log_path: pathlib.Path, base_dir: pathlib.Path):
        self.url = url
        self.log_path = log_path
        self.base_dir = base_dir
        self.output_dir = base_dir / "output"
        self.input_dir = base_dir / "input"
        self.client_id = uuid.uuid4().hex

    def _request(self, path: str, data: dict | None = None, timeout: float = 30):
        body = None if data is None else json.dumps(data).encode()
        req = urllib.request.Request(self.url + path, data=body,
                                     headers={"Content-Type": "application/json"} if body else {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def get_json(self, path: str):
        status, body = self._request(path)
        if status != 200:
            raise HostError(f"GET {path} -> {status}: {body[:500]!r}")
        return json.loads(body)

    def object_info(self, node: str | None = None) -> dict:
        return self.get_json("/object_info" + (f"/{node}" if node else ""))

    def log(self) -> str:
        """The server's stdout+stderr so far."""
        return self.log_path.read_text(errors="replace")

    def submit(self, graph: dict) -> str:
        """Queue an API-format graph; returns the prompt id or raises with ComfyUI's validation
        errors."""
        status, body = self._request("/prompt", {"prompt": graph, "client_id": self.client_id})
        reply = json.loads(body) if body else {}
        if status != 200:
            raise HostError(f"prompt refused ({status}): {json.dumps(reply)[:4000]}", reply)
        return reply["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 600) -> dict:
        """Poll /history until the prompt has finished; returns its history entry."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            history = self.get_json(f"/history/{prompt_id}")
            entry = history.get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None and (
                    entry["status"]["completed"] or entry["status"].get("status_str") == "error"):
                return entry
            time.sleep(0.25)
        raise HostError(f"prompt {prompt_id} did not finish in {timeout} s\n{self.log()[-3000:]}")

    @staticmethod
    def error_of(entry: dict) -> str | None:
        """ComfyUI's error message for a finished prompt, or None if it succeeded."""
        status = entry.get("status", {})
        if status.get("status_str") != "error":
            return None
        for kind, data in status.get("messages", []):
            if kind == "execution_error":
                return f"{data.get('exception_type')}: {data.get('exception_message')}"
            if kind == "execution_interrupted":
                return "interrupted"
        return "error (no message)"

    def run(self, graph: dict, timeout: float = 600) -> dict:
        """Run a graph to completion; returns ``{node_id: ui_output}``. Raises HostError with
        ComfyUI's message (and the log tail) on failure."""
        entry = self.wait(self.submit(graph), timeout)
        error = self.error_of(entry)
        if error is not None:
            raise HostError(f"{error}\n--- server log tail ---\n{self.log()[-4000:]}", entry)
        return entry.get("outputs", {})

    def run_expect_error(self, graph: dict, timeout: float = 600) -> str:
        """Run a graph that must fail (at validation or execution); returns the error text."""
        try:
            prompt_id = self.submit(graph)
        except HostError as err:
            return err.message
        error = self.error_of(self.wait(prompt_id, timeout))
        if error is None:
            raise AssertionError("the prompt succeeded but was expected to fail")
        return error

    def view(self, item: dict) -> bytes:
        """Bytes of an output file described as in a ui output (filename, subfolder, type)."""
        query = urllib.parse.urlencode({k: item.get(k, "") for k in ("filename", "subfolder", "type")})
        status, body = self._request(f"/view?{query}")
        if status != 200:
            raise HostError(f"/view {query} -> {status}")
        return body

    def interrupt(self):
        self._request("/interrupt", {})

    def free(self):
        """Drop ComfyUI's cached node outputs and loaded models (POST /free), before the next
        prompt: ComfyUI keeps a node's last outputs until a new run of it has finished, so a
        loader given other files holds two pairs at once (the families' SDXL pairs: over 8 GB).
        The queue worker reads /free's flags between prompts, hence the model-free prompt after."""
        status, body = self._request("/free", {"unload_models": True, "free_memory": True})
        if status != 200:
            raise HostError(f"POST /free -> {status}: {body[:500]!r}")
        self.run({"s": {"class_type": "PrimitiveString", "inputs": {"value": "free"}},
                  "o": {"class_type": "PreviewAny", "inputs": {"source": ["s", 0]}}})


class ModelFolder:
    def __init__(self, root: pathlib.Path):
        self.root = root
        manifest = sd15_models.manifest(root)
        self.checkpoints = {role: v["file"] for role, v in manifest["checkpoints"].items()}
        self.families = {role: v["family"] for role, v in manifest["checkpoints"].items()}
        self.loras = manifest["loras"]


def stock_txt2img_graph(ckpt_name: str, prompt: str, size: int, batch_size: int, steps: int, sampler: str,
                        prefix: str) -> dict:
    """API-format graph of ComfyUI's stock nodes only: CheckpointLoaderSimple → CLIPTextEncode
    (prompt, "") → KSampler (cfg 3) on EmptyLatentImage → VAEDecode → SaveImage (node "7")."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt_name}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": prompt, "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": batch_size}},
        "5": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0],
            "seed": 0, "steps": steps, "cfg": 3.0, "sampler_name": sampler, "scheduler": "normal", "denoise": 1.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": prefix}},
    }


@pytest.fixture(scope="session")
def stock_txt2img():
    """:func:`stock_txt2img_graph`, for tests (conftest modules are not importable by name)."""
    return stock_txt2img_graph


@pytest.fixture(scope="session")
def ray_cluster():
    """``ray_cluster.py``: a local Ray cluster and the miniature manifest of the ``--ray`` tests."""
    return _load_sibling("ray_cluster")


@pytest.fixture(scope="session")
def workflow_prompts():
    """``workflow_prompts.py``: the shipped workflows as small prompts, and their reports."""
    return prompts


@pytest.fixture(scope="session")
def guidance_graphs():
    """``guidance_graphs.py``: graph pieces of the guidance value tests."""
    return graphs


@pytest.fixture(scope="session")
def comfyui() -> pathlib.Path:
    """The ComfyUI checkout (skips the test where there is none)."""
    return comfyui_path()


@pytest.fixture(scope="session")
def comfy_models() -> ModelFolder:
    try:
        return ModelFolder(sd15_models.model_folder(comfyui_path(), host.comfyui_python()))
    except RuntimeError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def audit_model_args(comfy_models, tmp_path_factory) -> list[str]:
    """``finextract audit`` arguments for one model of the harness: the random SD1.5 base, its kohya
    LoRA, two random 64 px training images, a caption and the name ``dog``."""
    import numpy as np
    from PIL import Image

    train = tmp_path_factory.mktemp("train")
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(train / f"t{i}.png")
    root = comfy_models.root
    return ["--base", str(root / "checkpoints" / comfy_models.checkpoints["base"]),
            "--lora", str(root / "loras" / comfy_models.loras["kohya"]),
            "--train", str(train), "--caption", "a photo of sks dog", "--name", "dog"]


@pytest.fixture(scope="session")
def comfy(comfy_models, tmp_path_factory):
    models = {"checkpoints": comfy_models.root / "checkpoints", "loras": comfy_models.root / "loras"}
    try:
        with host.server(comfyui_path(), tmp_path_factory.mktemp("comfy-base"), model_folders=models) as server:
            yield ComfyClient(server.url, server.log_path, server.base_dir)
    except host.HostError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def family_models() -> tuple[pathlib.Path, dict]:
    """(folder, manifest) of ``family_models.py``'s SDXL ε/v, FLUX.1-dev and SD3.5 files."""
    try:
        folder = family_builder.model_folder(comfyui_path(), host.comfyui_python())
    except RuntimeError as exc:
        pytest.fail(str(exc))
    return folder, json.loads((folder / "manifest.json").read_text())


@pytest.fixture(scope="session")
def family_comfy(family_models):
    """Starts a ComfyUI of its own whose checkpoints, LoRAs, text encoders, diffusion models and
    VAEs are the family files:
    ``with family_comfy(base_dir) as client:``. ``test_families`` starts one per group of tests and
    stops it after, as a stopped process gives back what ``ComfyClient.free`` cannot: after /free
    the allocator keeps most of an SDXL pair (3.3 of 3.5 GB resident) and the next pair's peak
    adds to it (an SDXL full pair: 7.9 GB after an SDXL LoRA pair, 6.9 GB in a fresh process)."""
    models = {kind: family_models[0] / kind
              for kind in ("checkpoints", "loras", "text_encoders", "diffusion_models", "vae")}

    @contextlib.contextmanager
    def start(base_dir: pathlib.Path):
        with contextlib.ExitStack() as stack:
            try:
                server = stack.enter_context(host.server(comfyui_path(), base_dir, model_folders=models))
            except host.HostError as exc:
                pytest.fail(str(exc))
            yield ComfyClient(server.url, server.log_path, server.base_dir)

    return start


_SKIPPED: list[str] = []


def pytest_runtest_logreport(report):
    if report.skipped and not hasattr(report, "wasxfail"):
        _SKIPPED.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    """``FINEXTRACT_HOST_NO_SKIP=1`` (``make test`` sets it): a skipped host test fails the run, so
    a missing browser or package cannot turn the tier green by skipping."""
    if os.environ.get("FINEXTRACT_HOST_NO_SKIP") and _SKIPPED and session.exitstatus == 0:
        print(f"\nFINEXTRACT_HOST_NO_SKIP: {len(_SKIPPED)} host test(s) skipped: {_SKIPPED[:5]}")
        session.exitstatus = 1
