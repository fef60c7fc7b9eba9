"""A real Ray cluster on this machine, and the miniature world's manifest, for the ``--ray`` tests
(``test_cli_ray.py``) and ``python -m finextract.bench.ray``.

:func:`local_cluster` starts nodes as a platform does, with ``ray start``: a head with no CPU for
work and ``workers`` nodes of one CPU each, each ``ray start --block`` in its own process group
with its own short temporary folder (Ray's socket paths must stay under 108 bytes; nodes of one
machine must not share a socket folder), and ends exactly those groups afterwards (never
``ray stop``, which would stop every Ray of the machine's user).
"""
from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from safetensors.torch import load_file, save_file

MINI = pathlib.Path(__file__).resolve().parents[2] / "miniature"
MODELS = ("cat", "cat08", "half")


def write_world(folder: pathlib.Path) -> pathlib.Path:
    """``folder/manifest.csv`` of three models of the bundled miniature base, audited against the
    cat concept (N0 = 5): the demo LoRA at strengths 1.0 (``cat``) and 0.8 (``cat08``) and a copy
    of it with every up weight halved (``half``: another file, written beside the manifest).
    Returns the manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    lora = MINI / "weights" / "mini_lora_cat.safetensors"
    save_file({k: v * 0.5 if "lora_up" in k else v for k, v in load_file(str(lora)).items()},
              str(folder / "half.safetensors"))
    base, train = MINI / "weights" / "mini_base.safetensors", MINI / "concepts" / "cat"
    rows = [("cat", lora), ("cat08", f"{lora}:0.8"), ("half", "half.safetensors")]
    path = folder / "manifest.csv"
    path.write_text("name,base,finetuned,lora,train,caption\n" +
                    "".join(f"{name},{base},,{file},{train},a photo of sks cat\n" for name, file in rows))
    return path


def processes(marker: bytes, prefix: bool = False) -> list[int]:
    """PIDs of the processes whose command line holds ``marker`` (starts with it: ``prefix``)."""
    found = []
    for entry in pathlib.Path("/proc").iterdir():
        try:
            line = (entry / "cmdline").read_bytes() if entry.name.isdigit() else b""
        except OSError:
            continue
        if (line.startswith(marker) if prefix else marker in line):
            found.append(int(entry.name))
    return found


def in_groups(groups: set[int]) -> list[int]:
    """PIDs of the live processes in the process groups ``groups`` (Ray retitles its processes,
    so their command lines do not tell which cluster they belong to; their group does). Zombies,
    dead and waiting for their reaper, are not counted."""
    found = []
    for entry in pathlib.Path("/proc").iterdir():
        try:
            state, _parent, group = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:3] \
                if entry.name.isdigit() else ("", 0, 0)
            if int(group) in groups and state not in ("Z", "X"):
                found.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    return found


def shard_workers() -> list[int]:
    """PIDs of the Ray worker processes holding a ``ShardWorker`` (Ray titles them by their actor)."""
    return processes(b"ray::ShardWorker", prefix=True)


def same_priority() -> None:
    """In a node's new session (``start_new_session``): give its new scheduling autogroup the nice
    value of this process's (a test or bench run deprioritised with ``/proc/self/autogroup``
    would otherwise start its cluster at full priority beside it)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        nice = open(f"/proc/{os.getppid()}/autogroup").read().split("nice")[1].strip()
        with open("/proc/self/autogroup", "w") as f:
            f.write(nice)


@contextlib.contextmanager
def local_cluster(env: dict, workers: int = 2, timeout: float = 180):
    """Yield the address of a head (no CPU) plus ``workers`` one-CPU nodes started with ``env``;
    on exit, end their process groups (SIGTERM, then SIGKILL) and raise if any of their
    processes is left."""
    root = pathlib.Path(tempfile.mkdtemp(prefix="fxray", dir="/tmp"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    nodes = []
    store = ["--num-gpus", "0", "--object-store-memory", str(100 * 2**20)]  # shards go through files, not objects

    def start(name, *argv):
        (root / name).mkdir()
        with open(root / f"{name}.log", "w") as log:
            nodes.append(subprocess.Popen(
                [sys.executable, "-m", "ray.scripts.scripts", "start", "--block", "--disable-usage-stats",
                 "--temp-dir", str(root / name), *store, *argv],
                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True, preexec_fn=same_priority))
        deadline = time.monotonic() + timeout
        while "Ray runtime started" not in (root / f"{name}.log").read_text():
            if nodes[-1].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ray start {name} failed:\n{(root / f'{name}.log').read_text()[-3000:]}")
            time.sleep(0.5)

    try:
        start("head", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", "0",
              "--include-dashboard=false")
        for i in range(workers):
            start(f"w{i}", "--address", f"127.0.0.1:{port}", "--node-ip-address", "127.0.0.1", "--num-cpus", "1")
        yield f"127.0.0.1:{port}"
    finally:
        for node in nodes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5  # a graceful stop takes Ray ~30 s: not needed here
        for node in nodes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.wait(timeout=max(0.1, deadline - time.monotonic()))
        for node in nodes:  # whatever did not stop on SIGTERM
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.pid, signal.SIGKILL)
            node.wait()
        deadline = time.monotonic() + 15
        while (left := in_groups({node.pid for node in nodes})) and time.monotonic() < deadline:
            time.sleep(0.2)
        shutil.rmtree(root, ignore_errors=True)
        if left:
            raise RuntimeError(f"Ray processes of {root} left running: {left}")
