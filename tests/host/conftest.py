"""Real-host test harness: a real ComfyUI process on 127.0.0.1, driven over HTTP.

Fixtures (all session-scoped, all skip with a reason when ``COMFYUI_PATH`` is unset):

- ``comfy_models``: a folder of model files built with ComfyUI's own classes by
  ``bench/sd15_models.py`` (random weights, SD1.5 architecture; see its docstring). Cached between
  sessions (:mod:`finextract.bench.model_cache`), so it is built once (~40 s). Attributes:
  ``root``, ``checkpoints`` (role → file name: ``base``, ``finetuned``, ``other_family``,
  ``corrupt``), ``families`` (role → ComfyUI model class), ``loras`` (format → file name:
  ``kohya``, ``diffusers``, ``peft``, ``nomatch``: 4 layers each; ``attention``: every
  transformer linear layer, rank 16).
- ``comfy``: a :class:`ComfyClient` bound to a ComfyUI started with
  ``$COMFYUI_PYTHON main.py --cpu --listen 127.0.0.1 --port <free 8190-8199> --base-directory <tmp>``
  and ``--extra-model-paths-config`` pointing ``checkpoints``/``loras`` at ``comfy_models``. The
  pack is loaded from this checkout through a symlink in ``<tmp>/custom_nodes`` (a
  ``custom_nodes:`` entry in the yaml would load every sibling folder of the checkout too).
  ``COMFYUI_PYTHON`` defaults to the interpreter running the tests.

Usage in a test::

    def test_x(comfy, comfy_models):
        result = comfy.run(graph)              # raises HostError with ComfyUI's message on failure
        error = comfy.run_expect_error(graph)  # returns the error text; fails if the run succeeded
        comfy.object_info()["FineXtractGuider"]
        comfy.view(image_dict)                 # bytes of an output file
"""
from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pytest

from finextract.bench import model_cache

ROOT = pathlib.Path(__file__).resolve().parents[2]
PORTS = range(*(int(p) + i for i, p in enumerate(
    os.environ.get("FINEXTRACT_HOST_PORTS", "8190-8199").split("-"))))
"""Ports tried for ComfyUI, ``FINEXTRACT_HOST_PORTS=first-last`` (inclusive) to use another range."""
STARTUP_TIMEOUT_S = float(os.environ.get("FINEXTRACT_HOST_STARTUP_S", "240"))


class HostError(AssertionError):
    """A prompt ComfyUI refused or failed; ``message`` is ComfyUI's own text."""

    def __init__(self, message: str, details=None):
        super().__init__(message)
        self.message = message
        self.details = details


def _comfyui_path() -> pathlib.Path:
    path = os.environ.get("COMFYUI_PATH")
    if not path:
        pytest.skip("COMFYUI_PATH is unset: real-host tests need a ComfyUI 0.8.0 checkout")
    path = pathlib.Path(path).resolve()
    if not (path / "main.py").is_file():
        pytest.fail(f"COMFYUI_PATH={path} holds no main.py")
    return path


def _python() -> str:
    return os.environ.get("COMFYUI_PYTHON", sys.executable)


def _free_port() -> int:
    for port in PORTS:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.fail(f"no free port in {PORTS.start}-{PORTS.stop - 1} for ComfyUI")


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


class ModelFolder:
    def __init__(self, root: pathlib.Path):
        self.root = root
        manifest = model_cache.manifest(root)
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
def comfy_models() -> ModelFolder:
    try:
        return ModelFolder(model_cache.model_folder(_comfyui_path(), _python()))
    except RuntimeError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def comfy(comfy_models, tmp_path_factory):
    comfyui = _comfyui_path()
    base = tmp_path_factory.mktemp("comfy-base")
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / "comfyui-finextract").symlink_to(ROOT, target_is_directory=True)
    extra = base / "extra_model_paths.yaml"
    extra.write_text(
        "finextract_tests:\n"
        f"    checkpoints: {comfy_models.root / 'checkpoints'}\n"
        f"    loras: {comfy_models.root / 'loras'}\n")
    port = _free_port()
    log_path = base / "server.log"
    cmd = [_python(), "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
           "--base-directory", str(base), "--extra-model-paths-config", str(extra),
           "--disable-auto-launch", "--dont-print-server"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=comfyui, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    client = ComfyClient(f"http://127.0.0.1:{port}", log_path, base)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"ComfyUI exited with {proc.returncode} at startup:\n{client.log()[-4000:]}")
            try:
                client.get_json("/system_stats")
                break
            except (OSError, HostError):
                if time.monotonic() > deadline:
                    pytest.fail(f"ComfyUI did not answer in {STARTUP_TIMEOUT_S} s:\n{client.log()[-4000:]}")
                time.sleep(0.5)
        if any("IMPORT FAILED" in line and "comfyui-finextract" in line
               for line in client.log().splitlines()):
            pytest.fail(f"the pack failed to import:\n{client.log()[-4000:]}")
        yield client
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
