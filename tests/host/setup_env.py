"""Install what the real-host tier needs into this interpreter's environment (``make test`` runs it
once per venv when a ComfyUI checkout is present):

    python tests/host/setup_env.py COMFYUI_PATH

1. ComfyUI's ``requirements.txt`` without ``torch``/``torchaudio`` lines, under a constraint that
   pins the torch already installed (the project's CPU build: nothing may replace it), plus the
   packages the host tests use that ComfyUI does not list (``requests``, which ComfyUI imports
   unlisted, and Playwright's Python package).
2. torchvision: PyPI has only CUDA builds, whose C++ ops cannot load beside a CPU torch. torchvision
   supports running without its ops (``extension._has_ops()`` is then False and every op
   registration checks it) except two fake-tensor registrations (``nms``, ``qnms``) that are made
   unconditionally and make ``import torchvision`` raise. ComfyUI imports torchvision at start-up
   (``comfy.sd``) but the SD paths never call those ops, so the two registrations are guarded
   with the same ``_has_ops()`` check, in this environment's copy only.
3. Debian's ``chromium`` for the browser tests, through apt-get, when ``/usr/bin/chromium`` is
   missing (never ``playwright install``: no browser download).
"""
from __future__ import annotations

import importlib.util
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

EXTRA = ["requests", "playwright"]
CHROMIUM = pathlib.Path("/usr/bin/chromium")


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", *args], check=True)


def install_requirements(comfyui: pathlib.Path) -> None:
    import torch

    lines = (comfyui / "requirements.txt").read_text().splitlines()
    keep = [ln for ln in lines if not re.match(r"\s*torch(audio)?\s*([<>=~!;].*)?$", ln)]
    with tempfile.TemporaryDirectory() as tmp:
        req, pins = pathlib.Path(tmp, "requirements.txt"), pathlib.Path(tmp, "constraints.txt")
        req.write_text("\n".join(keep + EXTRA) + "\n")
        pins.write_text(f"torch=={torch.__version__.split('+')[0]}\n")
        pip("-r", str(req), "-c", str(pins))


def guard_torchvision() -> None:
    """Make ``import torchvision`` work without its C++ ops (see the module docstring)."""
    probe = subprocess.run([sys.executable, "-c", "import torchvision"], capture_output=True, text=True)
    if probe.returncode == 0:
        return
    spec = importlib.util.find_spec("torchvision")
    path = pathlib.Path(spec.submodule_search_locations[0]) / "_meta_registrations.py"
    text = path.read_text()
    guarded = re.sub(r'^@torch\.library\.register_fake\(("torchvision::\w+")\)$',
                     r"@(torch.library.register_fake(\1) if torchvision.extension._has_ops() else (lambda f: f))",
                     text, flags=re.M)
    if guarded != text:
        path.write_text(guarded)
    probe = subprocess.run([sys.executable, "-c", "import torchvision"], capture_output=True, text=True)
    if probe.returncode != 0:
        raise SystemExit(f"torchvision still does not import:\n{probe.stderr[-3000:]}")


def install_chromium() -> None:
    if CHROMIUM.exists():
        return
    if shutil.which("apt-get") is None:
        raise SystemExit(f"no {CHROMIUM} and no apt-get: install Debian's chromium for the browser tests")
    subprocess.run(["apt-get", "update", "-q"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"], check=True,
                   stdout=subprocess.DEVNULL)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        raise SystemExit(__doc__)
    comfyui = pathlib.Path(argv[0])
    install_requirements(comfyui)
    guard_torchvision()
    install_chromium()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
