"""The one door into ComfyUI. Besides ``nodes/`` (which ComfyUI itself imports when it loads the
pack), this is the only module that imports ComfyUI or starts it; everything else goes through it:

- :func:`comfyui_path` — where ComfyUI is: ``COMFYUI_PATH``, else ``../shared/comfyui`` beside
  this checkout (the unmodified ComfyUI 0.8.0 the project's CI runs), else None.
- :func:`import_comfyui` / :func:`module` — ComfyUI as a library in this process (its checkout put
  on ``sys.path`` only when a caller asks; importing the pack never does).
- :class:`Library` — the pack's nodes loaded as ComfyUI loads them (``comfy_entrypoint`` →
  ``get_node_list``) and executed in this process, beside a few of ComfyUI's own (its text-encoder
  and VAE loaders, FluxGuidance: :data:`STOCK_NODES`): the headless ``finextract audit``.
- :func:`server` — a real ComfyUI process on 127.0.0.1 with this checkout as its only custom node
  pack, for the host tests and the node-schema refresh.
- :func:`pack_env` — an environment whose ``finextract`` is this checkout, for subprocesses.
"""
from __future__ import annotations

import asyncio
import atexit
import contextlib
import importlib
import json
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

PACK_ROOT = pathlib.Path(__file__).resolve().parent
PACK_FOLDER = "comfyui-finextract"
"""The pack's folder name inside ``custom_nodes/`` (what the server's log names on import errors)."""
SHARED_COMFYUI = PACK_ROOT.parent / "shared" / "comfyui"
DEFAULT_PORTS = "8190-8199"


class HostError(RuntimeError):
    """ComfyUI could not be found, imported or started."""


# --- where ----------------------------------------------------------------------------------

def comfyui_path(explicit: str | os.PathLike | None = None) -> pathlib.Path | None:
    """The ComfyUI checkout to use: ``explicit``, else ``$COMFYUI_PATH``, else
    ``../shared/comfyui`` beside this checkout when it exists, else None. Raises HostError when a
    path is given that holds no ComfyUI."""
    given = explicit if explicit is not None else os.environ.get("COMFYUI_PATH")
    if not given:
        return SHARED_COMFYUI.resolve() if (SHARED_COMFYUI / "main.py").is_file() else None
    path = pathlib.Path(given).expanduser().resolve()
    if not ((path / "main.py").is_file() and (path / "comfy" / "model_management.py").is_file()):
        raise HostError(f"{path}: not a ComfyUI checkout (no main.py / comfy/model_management.py)")
    return path


def comfyui_python() -> str:
    """The interpreter that runs ComfyUI processes: ``$COMFYUI_PYTHON``, else this one."""
    return os.environ.get("COMFYUI_PYTHON", sys.executable)


def pack_env(tmp: str | os.PathLike, env: dict | None = None) -> dict:
    """A copy of ``env`` (default: this process's) whose ``finextract`` is this checkout, whatever
    is installed: ``tmp/finextract`` links here and leads ``PYTHONPATH``."""
    shim = pathlib.Path(tmp) / "finextract"
    if not shim.exists():
        shim.symlink_to(PACK_ROOT, target_is_directory=True)
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp)] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


# --- as a library -------------------------------------------------------------------------------

def import_comfyui(path: str | os.PathLike | None = None, cpu: bool = False) -> pathlib.Path:
    """Make ComfyUI importable in this process (its checkout on ``sys.path``) and select the CPU
    when asked, before ``comfy.model_management`` reads its arguments. Idempotent; returns the
    checkout."""
    comfyui = comfyui_path(path)
    if comfyui is None:
        raise HostError("no ComfyUI: set COMFYUI_PATH (or pass --comfyui) to a ComfyUI checkout")
    if str(comfyui) not in sys.path:
        sys.path.insert(0, str(comfyui))
    from comfy.cli_args import args  # the defaults: ComfyUI parses argv only as a server

    args.cpu = args.cpu or cpu
    return comfyui


def module(name: str):
    """A ComfyUI module (``comfy.utils``, ``folder_paths`` …), after :func:`import_comfyui`."""
    if not any((pathlib.Path(p) / "comfy" / "model_management.py").is_file() for p in sys.path if p):
        raise HostError(f"import_comfyui() first: {name} is ComfyUI's")
    return importlib.import_module(name)


_LINKS: pathlib.Path | None = None


def link_folder() -> pathlib.Path:
    """This process's folder of symlinks to the model files :meth:`Library.register_file` names
    (one subfolder per ComfyUI folder: ``checkpoints/``, ``loras/`` …): made on first use, removed
    when the process exits (a process killed outright leaves it, links only, in the temporary
    folder)."""
    global _LINKS
    if _LINKS is None:
        _LINKS = pathlib.Path(tempfile.mkdtemp(prefix="finextract-models-"))
        atexit.register(shutil.rmtree, _LINKS, ignore_errors=True)
    return _LINKS


STOCK_NODES = {"CLIPLoader": "nodes", "DualCLIPLoader": "nodes", "TripleCLIPLoader": "comfy_extras.nodes_sd3",
               "VAELoader": "nodes", "LoraLoader": "nodes", "FluxGuidance": "comfy_extras.nodes_flux"}
"""ComfyUI's own nodes :meth:`Library.run_stock` executes, and the module defining each: the
loaders of a diffusion-model-only base's text encoders and VAE (ComfyUI's split layout, as its
FLUX.1 template loads them), the LoRA loader that applies a LoRA's text-encoder tensors to them,
and FLUX.1's distilled-guidance value. A server registers them at
start; a library use imports just these."""


class Library:
    """The pack's nodes in this process, loaded the way ComfyUI loads them."""

    def __init__(self, comfyui: str | os.PathLike | None = None, cpu: bool = False,
                 output_dir: pathlib.Path | None = None):
        import_comfyui(comfyui, cpu)
        self.folder_paths = module("folder_paths")
        if output_dir is not None:
            self.folder_paths.set_output_directory(str(output_dir))
        from . import comfy_entrypoint

        extension = asyncio.run(comfy_entrypoint())
        asyncio.run(extension.on_load())
        self.nodes = {cls.GET_SCHEMA().node_id: cls for cls in asyncio.run(extension.get_node_list())}

    def register_file(self, folder: str, path: pathlib.Path) -> str:
        """Make ``path`` selectable in the ``folder`` combos (checkpoints, loras …); returns the
        name the nodes take, which ComfyUI resolves back to exactly this file.

        ComfyUI resolves a name in the first of a folder's search paths that holds it, so adding
        each file's own folder and handing out its bare name made the second of two files called
        ``lora.safetensors`` (every upload's LoRA; bases all called ``model.safetensors``) load
        the first, silently. Instead the file gets a name that only it can have: its absolute
        path spelled as a ComfyUI subfolder name (``home/me/uploads/17/lora.safetensors``; a
        Windows drive or UNC share becomes its first folders), made real by a symlink in this
        process's link folder (:func:`link_folder`), the one search path this adds. The name
        depends on the path alone, so every process and every ``--ray`` worker gives a file the
        same name (it is part of a run's identity) and reports and messages say which file it is.
        The path is made absolute but symlinks in it are not followed: a linked file keeps its
        own name and extension (a Hugging Face cache links ``model.safetensors`` to an extension-
        less blob), which ComfyUI reads the file by.

        Where no symlink can be made (Windows without Developer Mode or administrator rights, a
        link path over Windows' length limit) the file's own folder is added and its bare name
        returned: one run then cannot use two files of one name. Either way the name is checked
        to resolve to this very file, and :class:`HostError` says so when ComfyUI would load
        another one (a second file of the name in the fallback, or a file at that subfolder path
        in one of ComfyUI's own model folders)."""
        path = pathlib.Path(os.path.abspath(path))
        if not path.is_file():
            raise HostError(f"{path}: no such file")
        parts = [p for p in re.split(r"[\\/:]+", path.anchor) if p] + list(path.parts[1:])
        link = link_folder() / folder / pathlib.Path(*parts)
        try:
            if not link.is_symlink():
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(path)
            name, fix = "/".join(parts), f"move or rename that file in ComfyUI's {folder!r} folder"
            self.folder_paths.add_model_folder_path(folder, str(link_folder() / folder))
        except OSError as exc:
            name = path.name
            fix = (f"this process cannot make symlinks ({exc.strerror or exc}; on Windows: enable "
                   "Developer Mode), so a file is known by its file name alone: rename one of the "
                   "two files, or audit them in separate runs")
            self.folder_paths.add_model_folder_path(folder, str(path.parent))
        found = self.folder_paths.get_full_path(folder, name)
        if found is None or not os.path.samefile(found, path):
            raise HostError(f"{path}: ComfyUI's {folder!r} folders resolve its name {name!r} to "
                            f"{found or 'no file'}, not to this file, and would load that instead; {fix}")
        return name

    def run(self, node_id: str, **inputs):
        """Execute one node, under inference mode as ComfyUI's executor does; returns its
        outputs as a tuple."""
        if node_id not in self.nodes:
            raise SystemExit(f"node {node_id} is not loaded (pack incomplete?): {sorted(self.nodes)}")
        return tuple(self.call(self.nodes[node_id].execute, **inputs).result)

    @staticmethod
    def stock_node(node_id: str):
        """The class of one of ComfyUI's own nodes (:data:`STOCK_NODES`)."""
        return getattr(module(STOCK_NODES[node_id]), node_id)

    def run_stock(self, node_id: str, **inputs) -> tuple:
        """Execute one of ComfyUI's own nodes (:data:`STOCK_NODES`) as its executor does, under
        inference mode: a V3 node's ``execute``, a V1 node's ``FUNCTION`` on an instance; returns
        its outputs as a tuple. Its inputs are not validated (a prompt's are): check a combo
        against :meth:`options` first."""
        cls = self.stock_node(node_id)
        if hasattr(cls, "GET_SCHEMA"):
            return tuple(self.call(cls.execute, **inputs).result)
        return tuple(self.call(getattr(cls(), cls.FUNCTION), **inputs))

    def schema_input(self, node_id: str, name: str):
        """Input ``name`` of a node, the pack's (``self.nodes``) or ComfyUI's (:data:`STOCK_NODES`):
        a V3 input (``.options``, ``.min``, ``.max`` …), or a V1 node's ``(type or options, extras)``."""
        cls = self.nodes[node_id] if node_id in self.nodes else self.stock_node(node_id)
        if hasattr(cls, "GET_SCHEMA"):
            return {i.id: i for i in cls.GET_SCHEMA().inputs}[name]
        types = cls.INPUT_TYPES()
        return {**types.get("required", {}), **types.get("optional", {})}[name]

    def options(self, node_id: str, name: str) -> list:
        """The choices of a combo input of a node, the pack's or ComfyUI's (as a prompt is validated
        against them)."""
        spec = self.schema_input(node_id, name)
        return list(spec.options) if hasattr(spec, "options") else list(spec[0])

    @staticmethod
    def call(function, *args, **kwargs):
        """``function(*args, **kwargs)`` as a node's work runs: under inference mode, as ComfyUI's
        executor runs nodes (for the pack's own functions a caller uses below a node, e.g. the
        pair loader with a base kept loaded)."""
        import torch

        with torch.inference_mode():
            return function(*args, **kwargs)

    @staticmethod
    def on_progress(report) -> None:
        """Send every ComfyUI progress bar (``comfy.utils.ProgressBar`` of the nodes run here) to
        ``report(value, total)``; drawing it is the caller's (``cli.progress``)."""
        def hook(value, total, preview=None, node_id=None):
            report(value, total)

        module("comfy.utils").set_progress_bar_global_hook(hook)


# --- as a server --------------------------------------------------------------------------------

def ports() -> range:
    """Ports tried for a server: ``$FINEXTRACT_HOST_PORTS`` (``first-last``, inclusive), default
    8190-8199."""
    first, last = os.environ.get("FINEXTRACT_HOST_PORTS", DEFAULT_PORTS).split("-")
    return range(int(first), int(last) + 1)


def free_port() -> int:
    for port in ports():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise HostError(f"no free port in {ports().start}-{ports().stop - 1} for ComfyUI "
                    "(FINEXTRACT_HOST_PORTS=first-last picks another range)")


class Server:
    """A running ComfyUI: ``url``, ``base_dir`` (its writable base directory), ``log()``."""

    def __init__(self, url: str, base_dir: pathlib.Path, log_path: pathlib.Path, process):
        self.url, self.base_dir, self.log_path, self.process = url, base_dir, log_path, process

    def log(self) -> str:
        """The server's stdout + stderr so far."""
        return self.log_path.read_text(errors="replace")

    def get_json(self, path: str, timeout: float = 60):
        with urllib.request.urlopen(self.url + path, timeout=timeout) as response:  # noqa: S310 (loopback)
            return json.load(response)

    def pack_import_failed(self) -> bool:
        """Whether ComfyUI logged that loading this pack failed (its import-times table, or the
        warning it logs when ``comfy_entrypoint``/``get_node_list`` raised)."""
        return any(PACK_FOLDER in line and ("IMPORT FAILED" in line or "Error while calling comfy_entrypoint" in line
                                            or "Cannot import" in line) for line in self.log().splitlines())


@contextlib.contextmanager
def server(comfyui: str | os.PathLike | None = None, base_dir: pathlib.Path | None = None, *,
           model_folders: dict[str, pathlib.Path] | None = None, python: str | None = None,
           timeout: float | None = None):
    """Start ``main.py --cpu`` on a free loopback port with ``base_dir`` (a fresh temporary folder
    if None) as its writable base directory, this checkout linked into its ``custom_nodes/``, and
    ``model_folders`` ({"checkpoints": path, …}) added through ``--extra-model-paths-config``.
    Yields a :class:`Server` once ``/system_stats`` answers; raises HostError if ComfyUI exits,
    does not answer within ``timeout`` (``$FINEXTRACT_HOST_STARTUP_S``, default 240 s) or logs
    that the pack failed to import. Stops the process on exit."""
    comfyui = comfyui_path(comfyui)
    if comfyui is None:
        raise HostError("no ComfyUI: set COMFYUI_PATH to a ComfyUI checkout")
    timeout = float(os.environ.get("FINEXTRACT_HOST_STARTUP_S", "240")) if timeout is None else timeout
    with contextlib.ExitStack() as stack:
        if base_dir is None:
            base_dir = pathlib.Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="finextract-comfy-")))
        base_dir = pathlib.Path(base_dir)
        (base_dir / "custom_nodes").mkdir(parents=True, exist_ok=True)
        # a symlink, not a custom_nodes: entry in the yaml, which would load every sibling folder
        (base_dir / "custom_nodes" / PACK_FOLDER).symlink_to(PACK_ROOT, target_is_directory=True)
        port = free_port()
        cmd = [python or comfyui_python(), "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
               "--base-directory", str(base_dir), "--disable-auto-launch", "--dont-print-server",
               "--database-url", "sqlite:///:memory:"]
        if model_folders:
            extra = base_dir / "extra_model_paths.yaml"
            extra.write_text("finextract:\n" + "".join(f"    {k}: {v}\n" for k, v in model_folders.items()))
            cmd += ["--extra-model-paths-config", str(extra)]
        log_path = base_dir / "server.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(cmd, cwd=comfyui, stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        host = Server(f"http://127.0.0.1:{port}", base_dir, log_path, process)
        try:
            deadline = time.monotonic() + timeout
            while True:
                if process.poll() is not None:
                    raise HostError(f"ComfyUI exited with {process.returncode} at startup:\n{host.log()[-4000:]}")
                try:
                    host.get_json("/system_stats", timeout=10)
                    break
                except (OSError, urllib.error.URLError, ValueError):
                    if time.monotonic() > deadline:
                        raise HostError(f"ComfyUI did not answer in {timeout:.0f} s:\n{host.log()[-4000:]}") from None
                    time.sleep(0.5)
            if host.pack_import_failed():
                raise HostError(f"the pack failed to import:\n{host.log()[-4000:]}")
            yield host
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
